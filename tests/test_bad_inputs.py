"""Bad inputs (issue 13): every input kind x {corrupt, empty, truncated, wrong shape, wrong channels, NaN, inf,
integer vs float, absurd header} through the processor, the dataset builders and the model ends in a ValueError that
names the modality (or the clip and file), or in a counted skip with its reason: never in a silent result.

The absurd-header cases run in a child process whose address space is capped (``RLIMIT_AS``): before the fix a WAV
header claiming 1 Hz made a 40 KB file take 4.4 GB, and the build died of it."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the layouts_ helpers, whatever the import mode

from layouts_writers import TINY_AUDIO, TINY_FRAMES, make_cremad, write_float_wav, write_wav

from hf_dimml import DIMMLConfig, DIMMLForMultimodalClassification
from hf_dimml.data.builders import build_cremad, dataset_recipe
from hf_dimml.processing_dimml import DIMMLProcessor

AUDIO = {"name": "audio", "kind": "audio", **TINY_AUDIO}  # spectrogram (33, 32)
MODALITIES = [
    AUDIO,
    {"name": "image", "kind": "image", "image_size": 8},
    {"name": "digit", "kind": "image", "channels": 1, "image_size": [8, 8], "value_range": [0.0, 1.0]},  # av_digits
    {"name": "visual", "kind": "frames", "num_frames": 2, "image_size": 8},
    {"name": "mfcc", "kind": "spectrogram", "num_frames": 10, "n_bins": 13},
    {"name": "tab", "kind": "vector", "dim": 4},
]


def wav_bytes(
    samples: bytes,
    rate: int = 8000,
    channels: int = 1,
    block_align: int = 2,
    bits: int = 16,
    format_tag: int = 1,
    fmt_size: int | None = None,
    data_size: int | None = None,
) -> bytes:
    """A RIFF/WAVE file whose header says whatever it is told (sizes included), around `samples`."""
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, (rate * block_align) & 0xFFFFFFFF, block_align, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt) if fmt_size is None else fmt_size) + fmt
    chunks += b"data" + struct.pack("<I", len(samples) if data_size is None else data_size) + samples
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


TONE = (np.sin(np.arange(2000) / 3.0) * 12000).astype("<i2").tobytes()  # 0.25 s of 16-bit audio at 8 kHz


def png_bytes(shape: tuple[int, ...] = (12, 12, 3), mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def with_value(shape: tuple[int, ...], value: float, dtype=np.float32) -> np.ndarray:
    array = np.full(shape, 0.5, dtype=dtype)
    array.flat[1] = value
    return array


# The matrix: (id, modality, input, what the message must say besides the modality name).
NAN, INF = float("nan"), float("inf")
PROCESSOR_CASES = [
    # -- image ---------------------------------------------------------------------------
    ("image-corrupt", "image", b"\x89PNG\r\n\x1a\n garbage", r"cannot read image"),
    ("image-empty-bytes", "image", b"", r"cannot read image"),
    ("image-empty-array", "image", np.zeros((0, 5, 3), dtype=np.uint8), r"expected an image array.*empty.*\(0, 5, 3\)"),
    ("image-truncated", "image", png_bytes()[:60], r"cannot read image"),
    ("image-wrong-shape", "image", np.zeros((2, 2, 2, 2, 2)), r"expected an image array.*got shape \(2, 2, 2, 2\)"),
    ("image-wrong-channels", "image", np.zeros((4, 4, 2), dtype=np.uint8), r"expected \(H, W\).*\(4, 4, 2\)"),
    ("image-wrong-channels-4", "image", np.zeros((4, 4, 4), dtype=np.uint8), r"\(H, W, 3\).*\(4, 4, 4\)"),
    ("image-nan", "image", with_value((4, 4, 3), NAN), r"finite.*1 NaN"),
    ("image-inf", "image", with_value((4, 4, 3), INF), r"finite.*0 NaN and 1 infinite"),
    ("image-nan-pil-float", "image", Image.fromarray(with_value((4, 4), NAN)), r"finite.*1 NaN"),
    ("image-float-8bit-levels", "image", np.full((4, 4, 3), 200.0), r"\[0, 1\].*give 8-bit pixels as uint8"),
    ("image-int-out-of-range", "image", np.full((4, 4, 3), 300), r"int64 pixels outside.*0\.\.255"),
    ("image-complex", "image", np.zeros((4, 4, 3), dtype=np.complex64), r"real numbers.*complex64"),
    ("image-strings", "image", np.array([["a", "b"], ["c", "d"]]), r"real numbers.*<U1"),
    ("image-object", "image", [[1, None], [2, 3]], r"not a numeric array|real numbers"),
    ("digit-nan-value-range", "digit", with_value((8, 8), NAN), r"finite.*1 NaN"),
    ("digit-inf-value-range", "digit", with_value((8, 8), -INF), r"finite.*1 infinite"),
    ("digit-float-8bit-levels", "digit", np.full((8, 8), 255.0), r"value_range=\[0, 1\].*uint8"),
    ("digit-int64-levels", "digit", np.full((8, 8), 255), r"int64 pixels outside.*value_range=\[0, 1\]"),
    # -- frames --------------------------------------------------------------------------
    ("frames-corrupt", "visual", [b"garbage", png_bytes()], r"frame 0: cannot read image"),
    ("frames-truncated", "visual", [png_bytes(), png_bytes()[:60]], r"frame 1: cannot read image"),
    ("frames-empty-clip", "visual", [], r"0 frame\(s\), fewer than num_frames=2"),
    ("frames-empty-array", "visual", np.zeros((2, 0, 4, 3), dtype=np.uint8), r"frame array.*empty"),
    ("frames-wrong-shape", "visual", np.zeros((2, 4, 4, 3, 2, 2)), r"frame array|frames \(N, H, W\[, C\]\)"),
    ("frames-wrong-channels", "visual", np.zeros((2, 4, 4, 2), dtype=np.uint8), r"\(H, W, 3\).*\(4, 4, 2\)"),
    # NaN in a frame that eval sampling skips (frames 0 and 2 of 3): still found, the whole clip is checked.
    ("frames-nan-unsampled", "visual", np.stack([np.full((4, 4, 3), 0.5)] * 3) * [[[[1]]], [[[NAN]]], [[[1]]]],
     r"frame array.*finite.*48 NaN"),
    ("frames-inf", "visual", with_value((2, 4, 4, 3), INF), r"finite.*1 infinite"),
    ("frames-float-8bit-levels", "visual", np.full((2, 4, 4, 3), 128.0), r"\[0, 1\].*uint8"),
    # -- spectrogram ---------------------------------------------------------------------
    ("spectrogram-empty", "mfcc", np.zeros((13, 0)), r"spectrogram.*empty.*\(13, 0\)"),
    ("spectrogram-wrong-shape", "mfcc", np.zeros((2, 2, 13, 5)), r"2-D \(frequency, time\).*\(2, 13, 5\)"),
    ("spectrogram-wrong-bins", "mfcc", np.zeros((7, 13)), r"13 frequency bins.*transposed"),
    ("spectrogram-nan", "mfcc", with_value((13, 5), NAN), r"spectrogram of finite numbers.*1 NaN"),
    ("spectrogram-inf", "mfcc", with_value((13, 5), INF), r"finite.*1 infinite"),
    ("spectrogram-float32-overflow", "mfcc", with_value((13, 5), 1e300, np.float64), r"infinite.*float32"),
    ("spectrogram-ragged", "mfcc", [[1.0, 2.0], [3.0]], r"not a numeric array"),
    ("spectrogram-strings", "mfcc", np.full((13, 4), "x"), r"real numbers"),
    ("spectrogram-bfloat16-ok-but-nan", "mfcc", torch.full((13, 4), NAN, dtype=torch.bfloat16), r"52 NaN"),
    # -- audio: waveforms, the precomputed shortcut, WAV files ---------------------------
    ("waveform-empty", "audio", np.zeros(0), r"waveform.*empty"),
    ("waveform-wrong-shape", "audio", np.zeros((2, 2, 3, 400)), r"1-D or \(channels, samples\).*\(2, 3, 400\)"),
    ("waveform-wrong-channels", "audio", np.zeros((40, 50)), r"at most 16 channels.*\(40, 50\)"),
    ("waveform-nan", "audio", with_value((800,), NAN), r"waveform.*finite.*1 NaN"),
    ("waveform-inf", "audio", {"array": with_value((800,), INF), "sampling_rate": 8000}, r"finite.*1 infinite"),
    ("waveform-complex", "audio", np.zeros(800, dtype=np.complex128), r"real numbers.*complex128"),
    ("waveform-absurd-rate", "audio", {"array": np.zeros(800), "sampling_rate": 1}, r"rate.*1000\.\.768000.*got 1"),
    ("waveform-fractional-rate", "audio", {"array": np.zeros(800), "sampling_rate": 44100.5}, r"rate.*44100\.5"),
    ("waveform-nan-rate", "audio", {"array": np.zeros(800), "sampling_rate": NAN}, r"sampling rate.*nan"),
    ("precomputed-nan", "audio", with_value((33, 32), NAN), r"precomputed \(33, 32\) spectrogram.*1 NaN"),
    ("precomputed-inf", "audio", with_value((33, 32), INF), r"precomputed.*1 infinite"),
    ("wav-corrupt", "audio", b"RIFF\x00\x00\x00\x00JUNK", r"not a RIFF/WAVE"),
    ("wav-empty", "audio", {"bytes": b"\x00" * 0 + b"RIFF", "path": "x.wav"}, r"not a RIFF/WAVE"),
    ("wav-truncated-header", "audio", wav_bytes(TONE)[:30], r"missing 'fmt ' or 'data'"),
    ("wav-truncated-data", "audio", wav_bytes(TONE)[:45], r"no complete sample frame"),
    ("wav-no-samples", "audio", wav_bytes(b""), r"no complete sample frame"),
    ("wav-absurd-rate", "audio", wav_bytes(TONE, rate=1), r"sample rate 1 Hz is outside 1000\.\.768000"),
    ("wav-absurd-high-rate", "audio", wav_bytes(TONE, rate=4_000_000_000), r"sample rate 4000000000 Hz"),
    ("wav-absurd-channels", "audio", wav_bytes(TONE, channels=30000, block_align=60000), r"30000 channels"),
    ("wav-zero-channels", "audio", wav_bytes(TONE, channels=0), r"0 channels"),
    ("wav-absurd-fmt-size", "audio", wav_bytes(TONE, fmt_size=0xFFFFFFF0), r"'fmt ' chunk of 4294967280 bytes"),
    ("wav-block-align", "audio", wav_bytes(TONE, channels=2, block_align=3), r"block size 3 bytes.*2 channel"),
    ("wav-format", "audio", wav_bytes(TONE, format_tag=85), r"unsupported format tag 85"),
    ("wav-nan-float", "audio", wav_bytes(np.full(800, NAN, "<f4").tobytes(), block_align=4, bits=32, format_tag=3),
     r"finite.*800 NaN"),
    ("wav-inf-float", "audio", wav_bytes(np.full(800, INF, "<f8").tobytes(), block_align=8, bits=64, format_tag=3),
     r"finite.*800 infinite"),
    ("wav-missing-file", "audio", "/nonexistent/clip.wav", r"cannot read WAV file /nonexistent/clip\.wav"),
    # -- vector --------------------------------------------------------------------------
    ("vector-empty", "tab", np.zeros(0), r"1-D numeric vector.*empty"),
    ("vector-wrong-length", "tab", [1.0, 2.0], r"dim=4.*length 2"),
    ("vector-wrong-shape", "tab", np.zeros((2, 2, 4)), r"1-D vector.*\(2, 4\)"),
    ("vector-nan", "tab", [1.0, NAN, 2.0, 3.0], r"finite.*1 NaN"),
    ("vector-inf", "tab", torch.tensor([1.0, INF, 2.0, 3.0]), r"finite.*1 infinite"),
    ("vector-float32-overflow", "tab", [1e300, 0.0, 0.0, 0.0], r"infinite.*float32"),
    ("vector-strings", "tab", np.array(["1", "2", "3", "4"]), r"real numbers"),
    ("vector-none", "tab", [1.0, None, 2.0, 3.0], r"finite.*1 NaN|not a numeric"),
]


@pytest.fixture(scope="module")
def processor() -> DIMMLProcessor:
    return DIMMLProcessor(modalities=MODALITIES)


@pytest.mark.parametrize(
    ("modality", "value", "message"), [c[1:] for c in PROCESSOR_CASES], ids=[c[0] for c in PROCESSOR_CASES]
)
def test_processor_rejects_bad_input_naming_the_modality(
    processor: DIMMLProcessor, modality: str, value, message: str
) -> None:
    with pytest.raises(ValueError, match=rf"modality '{modality}'.*{message}"):
        processor(**{modality: value}, sampling_rate=8000)


def test_processor_matrix_covers_every_kind_and_defect() -> None:
    """The matrix above is what the issue asks for: each kind meets each defect that applies to it."""
    ids = [case[0] for case in PROCESSOR_CASES]
    for kind in ("image", "digit", "frames", "spectrogram", "waveform", "precomputed", "wav", "vector"):
        assert any(i.startswith(kind) for i in ids), kind
    for defect in ("corrupt", "empty", "truncated", "wrong-shape", "wrong-channels", "nan", "inf", "8bit", "absurd"):
        assert any(defect in i for i in ids), defect


def test_good_inputs_of_every_form_pass(processor: DIMMLProcessor) -> None:
    """The other side of the matrix: the checks reject nothing that is well formed."""
    grey = np.random.default_rng(3).integers(0, 256, (8, 8), dtype=np.uint8)
    out = processor(
        audio=wav_bytes(TONE),
        image=Image.fromarray(grey).convert("RGB"),
        digit=grey,
        visual=[png_bytes(), png_bytes()],
        mfcc=torch.zeros((13, 5), dtype=torch.bfloat16),
        tab=[True, 0, 1.5, np.float16(2)],
    )
    assert {name: tuple(t.shape) for name, t in out.items()} == {
        "audio": (1, 1, 33, 32),
        "image": (1, 3, 8, 8),
        "digit": (1, 1, 8, 8),
        "visual": (1, 2, 3, 8, 8),
        "mfcc": (1, 1, 13, 10),
        "tab": (1, 4),
    }
    assert all(torch.isfinite(t).all() for t in out.values())


# -- the model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> DIMMLForMultimodalClassification:
    config = DIMMLConfig(
        modalities=[
            {"name": "digit", "kind": "image", "encoder": "mlp", "input_shape": [1, 8, 8]},
            {"name": "mfcc", "kind": "spectrogram", "encoder": "mlp", "input_shape": [1, 13, 10]},
        ],
        hidden_size=8,
        num_labels=3,
    )
    return DIMMLForMultimodalClassification(config).eval()


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"digit": torch.zeros(2, 8, 8)}, r"'digit'.*4-D tensor.*\(batch, 1, 8, 8\).*\(2, 8, 8\)"),
        ({"digit": torch.zeros(2, 3, 8, 8)}, r"'digit'.*\(batch, 1, 8, 8\).*\(2, 3, 8, 8\)"),  # wrong channels
        ({"digit": torch.zeros(2, 1, 8, 9)}, r"'digit'.*\(batch, 1, 8, 8\)"),
        ({"mfcc": np.zeros((2, 1, 13, 10))}, r"'mfcc'.*expected a tensor"),
        ({"digit": torch.zeros(2, 1, 8, 8), "mfcc": torch.zeros(3, 1, 13, 10)}, r"disagree on batch size"),
        ({"depth": torch.zeros(2, 1)}, r"unknown modality"),
        ({"digit": torch.zeros(2, 1, 8, 8, dtype=torch.uint8)}, r"'digit'.*floating-point tensor.*torch.uint8"),
        ({"digit": torch.full((2, 1, 8, 8), NAN)}, r"'digit'.*128 value\(s\) are NaN or infinite"),
        ({"mfcc": torch.zeros(2, 1, 13, 10).index_fill_(3, torch.tensor([0]), INF)}, r"'mfcc'.*26 value\(s\)"),
    ],
)
def test_model_rejects_wrong_shapes_naming_the_modality(model, inputs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model(**inputs)


def test_processor_output_is_what_the_model_takes(model) -> None:
    """Raw inputs -> processor -> model: the processor is where NaN / inf / dtype are caught before the model."""
    processor = DIMMLProcessor(
        modalities=[MODALITIES[2], {"name": "mfcc", "kind": "spectrogram", "num_frames": 10, "n_bins": 13}]
    )
    with torch.no_grad():
        logits = model(**processor(digit=np.eye(8, dtype=np.uint8) * 255, mfcc=np.ones((13, 7)))).logits
    assert logits.shape == (1, 3) and torch.isfinite(logits).all()


# -- the builders --------------------------------------------------------------------------

# Per-file defects written over one clip's files of a CREMA-D layout: (id, file to damage, bytes, reason).
BUILDER_CASES = [
    ("wav-corrupt", "wav", b"this is no wav", r"not a RIFF/WAVE"),
    ("wav-empty", "wav", b"", r"not a RIFF/WAVE"),
    ("wav-truncated", "wav", wav_bytes(TONE)[:40], r"missing 'fmt ' or 'data'|no complete sample frame"),
    ("wav-absurd-rate", "wav", wav_bytes(TONE, rate=1), r"sample rate 1 Hz"),
    ("wav-absurd-channels", "wav", wav_bytes(TONE, channels=300, block_align=600), r"300 channels"),
    ("wav-absurd-fmt-size", "wav", wav_bytes(TONE, fmt_size=0x7FFFFFFF), r"'fmt ' chunk of 2147483647 bytes"),
    ("wav-nan", "wav", wav_bytes(np.full(500, NAN, "<f4").tobytes(), block_align=4, bits=32, format_tag=3), r"NaN"),
    ("wav-inf", "wav", wav_bytes(np.full(500, -INF, "<f4").tobytes(), block_align=4, bits=32, format_tag=3),
     r"infinite"),
    ("frame-corrupt", "frame", b"\xff\xd8 not a jpeg", r"unreadable image"),
    ("frame-empty", "frame", b"", r"unreadable image"),
    ("frame-truncated", "frame", png_bytes((40, 40, 3))[:100], r"unreadable image"),
]
DAMAGED_CLIP = "1001_IEO_HAP_X1"


def damage(root: Path, clip: str, target: str, payload: bytes) -> Path:
    path = root / "AudioWAV" / f"{clip}.wav" if target == "wav" else root / "Image-01-FPS" / clip / "000002.jpg"
    path.write_bytes(payload)
    return path


def build(root: Path, cache: Path, on_missing: str):
    return build_cremad(
        root,
        cache_dir=cache,
        recipe={"audio": TINY_AUDIO, "visual": TINY_FRAMES},
        validation_fraction=0.25,
        on_missing=on_missing,
        progress=False,
    )


@pytest.mark.parametrize(
    ("target", "payload", "reason"), [c[1:] for c in BUILDER_CASES], ids=[c[0] for c in BUILDER_CASES]
)
def test_builder_names_the_clip_and_file_of_a_bad_file(
    tmp_path: Path, target: str, payload: bytes, reason: str
) -> None:
    root = make_cremad(tmp_path / "cremad")
    path = damage(root, DAMAGED_CLIP, target, payload)
    with pytest.raises(ValueError) as error:
        build(root, tmp_path / "cache", on_missing="error")
    message = str(error.value)
    assert DAMAGED_CLIP in message and str(path) in message and re.search(reason, message), message


def test_builder_skip_mode_counts_every_bad_file_with_its_reason(tmp_path: Path) -> None:
    root = make_cremad(tmp_path / "cremad", train_per_label=len(BUILDER_CASES))
    clips = sorted(path.stem for path in (root / "AudioWAV").iterdir())
    damaged = {}
    for clip, (case_id, target, payload, reason) in zip(clips, BUILDER_CASES):
        damage(root, clip, target, payload)
        damaged[clip] = (case_id, reason)
    dataset = build(root, tmp_path / "cache", on_missing="skip")
    skipped = dataset_recipe(dataset)["skipped"]
    assert skipped["count"] == len(BUILDER_CASES)
    by_clip = {entry["id"]: entry for entry in skipped["clips"]}
    assert set(by_clip) == set(damaged)
    for clip, (case_id, reason) in damaged.items():
        assert by_clip[clip]["problem"] == "bad_data", case_id
        assert clip in by_clip[clip]["reason"], case_id
        assert re.search(reason, by_clip[clip]["reason"]), (case_id, by_clip[clip]["reason"])
    built = {clip for split in dataset.values() for clip in split["id"]}
    assert not built & set(damaged) and len(built) == len(clips) - len(damaged)
    for split in dataset.values():
        assert np.isfinite(np.asarray(split["audio"])).all()


# -- absurd headers under a memory cap -------------------------------------------------------

MEMORY_CAPPED_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from hf_dimml.data.builders import build_cremad, dataset_recipe
    from hf_dimml.processing_dimml import DIMMLProcessor, read_wav

    root, cache, wav_1hz, wav_1khz = sys.argv[1:5]
    processor = DIMMLProcessor(modalities=[{"name": "audio", "kind": "audio"}])  # 22.05 kHz, 3 s: (257, 188)
    processor(audio=wav_1khz)  # warm-up: the allocator's and torch's one-off mappings happen before the cap
    with open("/proc/self/status") as status:
        vm_size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    cap = vm_size + 768 * 2**20  # what is mapped now + 768 MiB; the 1 Hz file needed 44 GB before the fix
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    results = {}
    try:
        processor(audio=wav_1hz)
        results["processor_1hz"] = "no error"
    except ValueError as err:
        results["processor_1hz"] = str(err)
    results["processor_1khz"] = list(processor(audio=wav_1khz)["audio"].shape)  # a long file at 1 kHz: only 3 s read
    recipe = {"audio": {"sampling_rate": 22050, "duration": 3.0}, "visual": {"num_frames": 2, "image_size": 16}}
    dataset = build_cremad(root, cache_dir=cache, recipe=recipe, validation_fraction=0.25, on_missing="skip",
                           progress=False)
    results["skipped"] = dataset_recipe(dataset)["skipped"]
    results["rows"] = sum(split.num_rows for split in dataset.values())
    print(json.dumps(results))
    """
)


def test_absurd_wav_headers_are_named_errors_within_a_memory_cap(tmp_path: Path) -> None:
    root = make_cremad(tmp_path / "cremad")
    samples = (np.sin(np.arange(200_000) / 3.0) * 12000).astype("<i2").tobytes()  # 400 KB
    wav_1hz = root / "AudioWAV" / f"{DAMAGED_CLIP}.wav"
    wav_1hz.write_bytes(wav_bytes(samples, rate=1))  # 200,000 s claimed; resampled whole: 4.4e9 samples
    wav_1khz = tmp_path / "long_1khz.wav"
    wav_1khz.write_bytes(wav_bytes(samples, rate=1000))  # 200 s of a plausible rate: only its first 3 s are read
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_CAPPED_CHILD, str(root), str(tmp_path / "cache"), str(wav_1hz), str(wav_1khz)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert "modality 'audio'" in results["processor_1hz"] and "sample rate 1 Hz" in results["processor_1hz"]
    assert results["processor_1khz"] == [1, 1, 257, 188]
    assert results["skipped"]["count"] == 1
    entry = results["skipped"]["clips"][0]
    assert entry["id"] == DAMAGED_CLIP and entry["problem"] == "bad_data" and "sample rate 1 Hz" in entry["reason"]
    assert results["rows"] == 14
