"""The reference-protocol options of the processor (docs/datasets.md, "Reference protocol of the presets"):
DI-MML's scipy-style audio spectrogram, UCF101's contiguous flow window and its RandomCrop(224) without resizing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from hf_dimml.data.builders import AUDIO_DIMML_SCIPY, DEFAULT_MODALITIES
from hf_dimml.processing_dimml import DIMMLProcessor, compute_audio_spectrogram, spectrogram_shape

# A small scipy-style recipe: 8 kHz, 64-sample segments every 16 samples, no z-score (values stay checkable by hand).
SMALL = {"sampling_rate": 8000, "duration": 0.5, "n_fft": 64, "hop_length": 16, "window": "tukey",
         "stft_style": "scipy", "center": False, "normalize": False}


def _tukey_periodic(length: int, alpha: float = 0.25) -> np.ndarray:
    """Periodic Tukey window written from its definition (taper over alpha/2 of the period at each end)."""
    period = length  # the symmetric window of length + 1 without its last sample: n / period in [0, 1)
    out = np.ones(length)
    for n in range(length):
        x = n / period
        if x < alpha / 2:
            out[n] = 0.5 * (1 + math.cos(2 * math.pi / alpha * (x - alpha / 2)))
        elif x > 1 - alpha / 2:
            out[n] = 0.5 * (1 + math.cos(2 * math.pi / alpha * (x - 1 + alpha / 2)))
    return out


def test_scipy_style_shape_tone_peak_and_one_bin_by_hand():
    rate, bin_index = 8000, 5
    t = np.arange(4000) / rate
    tone = (0.5 * np.sin(2 * np.pi * bin_index * rate / 64 * t) + 0.25).astype(np.float32)  # 625 Hz + DC offset
    spec = compute_audio_spectrogram(tone, rate, SMALL)
    assert spec.shape == spectrogram_shape(SMALL) == (33, 1 + (4000 - 64) // 16)  # (257, 1004) at DI-MML's size
    assert (spec.argmax(axis=0) == bin_index).all()
    # Frame 0, bin 5 by hand: segment minus its mean (the DC offset goes), Tukey window, DFT, one-sided density.
    segment = tone[:64].astype(np.float64)
    window = _tukey_periodic(64)
    centred = (segment - segment.mean()) * window
    angle = [2 * math.pi * bin_index * n / 64 for n in range(64)]
    dft = sum(centred[n] * complex(math.cos(angle[n]), -math.sin(angle[n])) for n in range(64))
    power = 2 * abs(dft) ** 2 / (rate * (window**2).sum())
    assert spec[bin_index, 0] == pytest.approx(math.log(power + 1e-7), abs=1e-5)
    assert spec[0, 0] < math.log(1e-3)  # the constant offset is removed per segment


def test_scipy_style_log_offset_on_a_constant_signal_and_dimml_shape():
    constant = np.full(4000, 0.3, dtype=np.float32)  # nothing left once each segment's mean is removed
    spec = compute_audio_spectrogram(constant, 8000, {**SMALL, "log_offset": 1e-3})
    np.testing.assert_allclose(spec, math.log(1e-3), atol=1e-6)
    assert spectrogram_shape(AUDIO_DIMML_SCIPY) == (257, 1004)
    one_second = np.sin(np.arange(22050) / 10).astype(np.float32)  # tiled to 160,000 samples as DI-MML does
    spec = compute_audio_spectrogram(one_second, 22050, AUDIO_DIMML_SCIPY)
    assert spec.shape == (257, 1004) and abs(float(spec.mean())) < 1e-4
    assert float(spec.std()) == pytest.approx(1, abs=1e-4)


def test_scipy_style_matches_scipy_when_installed():
    signal = pytest.importorskip("scipy.signal")
    x = (np.random.default_rng(0).standard_normal(30000) * 0.4).astype(np.float32)
    ours = compute_audio_spectrogram(x, 22050, AUDIO_DIMML_SCIPY)
    reference = np.clip(np.tile(x, 10)[:160000], -1, 1)
    _, _, power = signal.spectrogram(reference, 22050, nperseg=512, noverlap=353)
    expected = np.log(power + 1e-7)
    expected = (expected - expected.mean()) / (expected.std() + 1e-9)
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_scipy_style_needs_no_centring_and_known_values():
    with pytest.raises(ValueError, match="center=False"):
        DIMMLProcessor(modalities=[{"name": "a", "kind": "audio", "stft_style": "scipy"}])
    with pytest.raises(ValueError, match="stft_style"):
        DIMMLProcessor(modalities=[{"name": "a", "kind": "audio", "stft_style": "torch"}])


@pytest.fixture()
def flow_clip(tmp_path):
    """20 flow frame pairs, u/<clip>/frame0000NN.png of value 10 * N, v of 255 - 10 * N."""
    pairs = []
    for number in range(1, 21):
        pair = []
        for direction, value in (("u", 10 * number), ("v", 255 - 10 * number)):
            folder = tmp_path / direction / "v_Clip_g01_c01"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"frame{number:06d}.png"
            Image.fromarray(np.full((6, 8), value, dtype=np.uint8)).save(path)
            pair.append(str(path))
        pairs.append(pair)
    return pairs


def _flow_processor(sampling: str) -> DIMMLProcessor:
    return DIMMLProcessor(modalities=[{"name": "flow", "kind": "frames", "num_frames": 10, "channels": 2,
                                       "image_size": None, "frame_sampling": sampling}])


def _frame_numbers(tensor: torch.Tensor) -> list[int]:
    u = (tensor[0, :, 0, 0, 0] * 255).round().int().tolist()
    v = (tensor[0, :, 1, 0, 0] * 255).round().int().tolist()
    assert [255 - x for x in u] == v  # u and v of the same frames
    return [x // 10 for x in u]


def test_contiguous_flow_window_centred_at_eval_random_start_in_training(flow_clip):
    processor = _flow_processor("contiguous_window")
    # Evaluation: offset len // 2 - clip_len // 2 = 5, i.e. frames 6..15 (numbered from 1).
    assert _frame_numbers(processor(flow=flow_clip, is_batched=False, train=False)["flow"]) == list(range(6, 16))
    starts = set()
    for seed in range(60):
        numbers = _frame_numbers(processor(flow=flow_clip, is_batched=False, train=True,
                                           generator=torch.Generator().manual_seed(seed))["flow"])
        assert numbers == list(range(numbers[0], numbers[0] + 10))  # consecutive
        starts.add(numbers[0] - 1)
    assert starts <= set(range(10)) and len(starts) >= 5  # randint(0, 20 - 10): offsets 0..9
    # The default still spreads the frames over the clip.
    assert _frame_numbers(_flow_processor("spread")(flow=flow_clip, is_batched=False, train=False)["flow"]) == [
        int((i + 0.5) * 2) + 1 for i in range(10)
    ]


def test_ucf101_preset_uses_the_reference_flow_window_and_crop():
    rgb, flow = DEFAULT_MODALITIES["ucf101"]
    assert flow["frame_sampling"] == "contiguous_window"
    for cfg in (rgb, flow):
        assert cfg["random_crop"] == 224 and "random_resized_crop" not in cfg and cfg["random_flip"]


def _position_image(height: int = 8, width: int = 10) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return (rows * 16 + cols).astype(np.uint8)  # each pixel says where it is


def test_random_crop_crops_without_resizing():
    image = _position_image()
    processor = DIMMLProcessor(modalities=[{"name": "img", "kind": "image", "channels": 1, "image_size": [4, 6],
                                            "random_crop": [4, 6]}])
    boxes = set()
    for seed in range(40):
        generator = torch.Generator().manual_seed(seed)
        out = processor(img=image, is_batched=False, train=True, generator=generator)["img"][0, 0]
        values = (out * 255).round().int().numpy()
        top, left = divmod(int(values[0, 0]), 16)
        np.testing.assert_array_equal(values, image[top : top + 4, left : left + 6])  # exact pixels: no resize
        boxes.add((top, left))
    assert len(boxes) > 5 and all(0 <= t <= 4 and 0 <= lf <= 4 for t, lf in boxes)
    centre = (processor(img=image, is_batched=False, train=False)["img"][0, 0] * 255).round().int().numpy()
    np.testing.assert_array_equal(centre, image[2:6, 2:8])  # CenterCrop: round((8 - 4) / 2), round((10 - 6) / 2)


def test_random_crop_shares_one_box_across_frames_and_resizes_small_images():
    frames = [_position_image(), _position_image() // 2]
    processor = DIMMLProcessor(modalities=[{"name": "f", "kind": "frames", "num_frames": 2, "channels": 1,
                                            "image_size": None, "random_crop": 5}])
    out = processor(f=frames, is_batched=False, train=True, generator=torch.Generator().manual_seed(3))["f"][0, :, 0]
    out = out * 255
    first, second = out.round().int().numpy()
    top, left = divmod(int(first[0, 0]), 16)
    np.testing.assert_array_equal(first, frames[0][top : top + 5, left : left + 5])
    np.testing.assert_array_equal(second, frames[1][top : top + 5, left : left + 5])
    small = processor(f=[np.zeros((3, 4), np.uint8)] * 2, is_batched=False, train=True)["f"]
    assert tuple(small.shape) == (1, 2, 1, 5, 5)
    with pytest.raises(ValueError, match="not both"):
        DIMMLProcessor(modalities=[{"name": "f", "kind": "image", "random_crop": 4, "random_resized_crop": [0.5, 1]}])


def test_cache_keys_of_the_presets_that_kept_their_recipe_are_unchanged():
    from hf_dimml.data.builders.engine import _keyed_modalities, _resolve_modalities

    for name in ("cremad", "ave", "kinetics_sounds", "modelnet40"):
        keyed = _keyed_modalities(_resolve_modalities(name, None))
        assert not any({"stft_style", "frame_sampling", "random_crop"} & set(cfg) for cfg in keyed), name
    keyed = _keyed_modalities(_resolve_modalities("ucf101", None))  # changed on purpose: rebuilt once
    assert keyed[1]["frame_sampling"] == "contiguous_window" and keyed[1]["random_crop"] == [224, 224]
