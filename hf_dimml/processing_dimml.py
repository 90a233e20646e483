"""Raw-input processor of hf_dimml multimodal classifiers: ``DIMMLProcessor``.

Self-contained on purpose: only the standard library, numpy, torch, PIL and transformers are
imported, because ``save_pretrained`` copies this file next to a checkpoint so that
``AutoFeatureExtractor.from_pretrained(path, trust_remote_code=True)`` (or ``AutoProcessor``)
works where ``hf_dimml`` is not installed. The dataset builders of ``hf_dimml.data`` import the
audio recipe from here, so training data and a user's raw clip go through one implementation.

Configuration (``preprocessor_config.json``)::

    {"feature_extractor_type": "DIMMLProcessor",
     "auto_map": {"AutoFeatureExtractor": "processing_dimml.DIMMLProcessor",
                  "AutoProcessor": "processing_dimml.DIMMLProcessor"},
     "modalities": [{"name": "audio", "kind": "audio", ...}, {"name": "visual", "kind": "frames", ...}]}

Every modality dict has ``name`` and ``kind``; the other keys depend on the kind and are all
filled with their defaults at construction (see ``MODALITY_DEFAULTS``), so a saved config states
the full recipe. Output of one sample, per kind (a batch axis is always added in front):

* ``audio`` ``(1, F, T)``: the pinned recipe of :func:`compute_audio_spectrogram`.
* ``spectrogram`` ``(1, F, num_frames)``: a precomputed frequency x time array, resized in time.
* ``image`` ``(C, H, W)``; ``frames`` ``(num_frames, C, H, W)``; ``vector`` ``(dim,)``.
* ``sequence`` ``(channels, num_frames)``: a multichannel time series of any length, resized in time.

Normalisation: every kind but ``audio`` (whose recipe z-scores each clip) takes ``mean`` / ``std``, per feature
(``vector``) or per channel, given as numbers or as ``"train"``: :meth:`DIMMLProcessor.fit_normalization` then
computes them from the training split and writes the numbers into the config, so the saved processor applies them to
raw inputs. Sizes left open (``dim``, ``channels``, ``num_frames``, ``n_bins``, ``image_size``) are taken from a
training example by :meth:`DIMMLProcessor.record_open_sizes`, recorded, and checked on every input.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import os
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BatchFeature, FeatureExtractionMixin

__all__ = [
    "DIMMLProcessor",
    "DIMMLTransform",
    "MODALITY_DEFAULTS",
    "PROCESSOR_KINDS",
    "audio_read_seconds",
    "compute_audio_spectrogram",
    "read_wav",
    "resample_waveform",
    "resolve_modality_config",
    "spectrogram_shape",
]

logger = logging.getLogger(__name__)

PROCESSOR_KINDS = ("audio", "spectrogram", "image", "frames", "vector", "sequence")
#: ``mean: train`` / ``std: train`` in a modality config: computed from the training split by
#: :meth:`DIMMLProcessor.fit_normalization`, which replaces them by the numbers (then saved with the processor).
FIT_FROM_TRAIN = "train"

# Shared by the image and frames kinds.
_IMAGE_DEFAULTS: dict[str, Any] = {
    "image_size": 224,  # int (square) or [height, width]; None keeps the input size
    "channels": 3,
    "mean": None,  # per-channel list (or one float); None: no normalisation, values stay in [0, 1]
    "std": None,
    # [low, high] of raw float pixels (and of other integer arrays: uint16, int64, ...); None: floats are already in
    # [0, 1], uint16 in 0..65535. bool and uint8 (8-bit PIL modes and files) carry their own scale and never go
    # through it: they are divided by 1 (bool) or 255 (uint8) (see `_scale_to_unit`).
    "value_range": None,
    "interpolation": "bilinear",  # "bilinear" | "bicubic" | "nearest" (antialiased when shrinking)
    "random_resized_crop": None,  # train only: [min_scale, max_scale] of the crop area, aspect 3/4..4/3
    # int or [height, width]: a crop of that size without resizing (DI-MML's UCF101 GroupRandomCrop /
    # GroupCenterCrop): at a random position in training, centred at evaluation; an image smaller than the crop is
    # resized to it first (as GroupRandomCrop does). Then `image_size` applies (nothing to do when equal).
    "random_crop": None,
    "random_flip": False,  # train only: horizontal flip with probability 0.5
    "flip_inverts_channels": [],  # channels whose sign flips with a horizontal flip (optical-flow u: [0])
}

#: Default parameters per kind. ``name`` and ``kind`` are always required.
MODALITY_DEFAULTS: dict[str, dict[str, Any]] = {
    "audio": {
        "sampling_rate": 22050,  # target rate of the recipe
        "duration": 3.0,  # seconds; shorter clips are tiled (or zero-padded), longer ones cropped
        "short_clip": "tile",  # "tile" | "zero_pad"
        "n_fft": 512,
        "hop_length": 353,
        "win_length": None,  # None -> n_fft
        "window": "hann",  # periodic Hann, as librosa / scipy get_window("hann"); "tukey": periodic Tukey, alpha 0.25
        # "librosa": log |librosa.stft| (OGM-GE line); "scipy": log of scipy.signal.spectrogram's default output, the
        # one-sided power spectral density of each segment after removing its mean (DI-MML's / OGM-GE's offline
        # `audio_preprocessing.py` / `obtain_audio_spectrogram.py`; needs center=False)
        "stft_style": "librosa",
        "center": True,
        "pad_mode": "constant",  # librosa >= 0.10 default for center=True
        "clip_amplitude": True,  # clip the waveform to [-1, 1] before the STFT (OGM-GE line)
        "log_offset": 1e-7,  # log(|STFT| + log_offset)
        "normalize": True,  # per-clip z-score of the log-magnitude spectrogram
        "normalize_eps": 1e-5,  # (S - mean) / (std + normalize_eps)
        "resampling": "sinc_lowpass_linear",  # the one method implemented, stated for model cards
    },
    "spectrogram": {
        "num_frames": None,  # output time length; None: the first training example's (recorded when inferred)
        "n_bins": None,  # check of the frequency size F; None: the first training example's (recorded)
        "time_resize": "interpolate",  # "interpolate" (linear) | "tile_crop" (tile, keep the first num_frames)
        "normalize": False,  # per-sample z-score
        "normalize_eps": 1e-5,
        "mean": None,  # dataset statistics of the one channel (after `normalize`): a float, [float] or "train"
        "std": None,
    },
    "image": dict(_IMAGE_DEFAULTS),
    "frames": {
        "num_frames": None,  # required: T frames per clip
        # "spread": num_frames distinct frames drawn at random in training, evenly spaced at evaluation;
        # "contiguous_window": num_frames consecutive frames, from a random start in training and the centred start
        # len // 2 - num_frames // 2 at evaluation (DI-MML's UCF101 `sample_flow`, a stack of consecutive flow frames)
        "frame_sampling": "spread",
        **_IMAGE_DEFAULTS,
    },
    "vector": {
        "dim": None,  # check of the feature size D; None: the first training example's (recorded when inferred)
        "mean": None,  # per-feature list (or one float), or "train": (x - mean) / std; None: used as given
        "std": None,
    },
    # A multichannel time series (C, T) of any length T, e.g. sensor recordings.
    "sequence": {
        "channels": None,  # C; None: the first training example's (recorded when inferred)
        "num_frames": None,  # output length T; None: the first training example's (recorded when inferred)
        "time_resize": "interpolate",  # "interpolate" (linear) | "crop_pad" (crop / zero-pad) | "tile_crop"
        "random_crop": False,  # train only, with crop_pad: a random window of a longer sequence (else its start)
        "mean": None,  # per-channel list (or one float), or "train"; applied before the time resize
        "std": None,
    },
}

_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
_SEQUENCE_RESIZES = ("interpolate", "crop_pad", "tile_crop")
_FRAME_SAMPLINGS = ("spread", "contiguous_window")
_RESERVED_NAMES = {"labels", "train", "return_tensors", "is_batched", "sampling_rate", "generator"}
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_PIL_MODE_BY_CHANNELS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_MAX_AUDIO_CHANNELS = 16
# Sample rates a recording can sensibly have: telephone-band archives (8 kHz, rarely lower) up to the fastest audio
# interfaces. A header outside is corrupt, and believing it is costly: a 1 Hz header upsampled to 22.05 kHz turned a
# 40 KB file into 4.4 GB (issue 13).
_SAMPLING_RATE_RANGE = (1_000, 768_000)
_MAX_FMT_CHUNK = 1024  # a 'fmt ' chunk is 16..40 bytes; a larger claim is a corrupt header, not something to read
#: Integer dtypes that are image depths, with the pixel value meaning "white" (the dtype's maximum).
_IMAGE_DEPTH_MAX = {np.dtype(np.bool_): 1, np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}
#: The depths that mean only that: 16-bit files often hold 10- or 12-bit data, which a value_range describes.
_FIXED_DEPTHS = (np.dtype(np.bool_), np.dtype(np.uint8))
_OUT_OF_RANGE_TOLERANCE = 1e-3  # of the range width: float rounding of data that was clipped to the range


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def _as_size(value: Any, where: str) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [int(value), int(value)]
    if not (
        isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, np.integer)) for v in value)
    ):
        raise ValueError(f"{where}: image_size must be an int or [height, width], got {value!r}")
    if min(value) < 1:
        raise ValueError(f"{where}: image_size must be positive, got {value!r}")
    return [int(v) for v in value]


def _as_channel_list(
    value: Any, channels: int | None, key: str, where: str, unit: str = "channel"
) -> list[float] | float | str | None:
    """A per-channel (or per-feature) statistic: None, ``"train"`` (to be fitted), or ``channels`` floats.

    One number is repeated ``channels`` times; where ``channels`` is still open it stays one float.
    """
    if value is None or value == FIT_FROM_TRAIN:
        return value
    if isinstance(value, str) or not (
        isinstance(value, (int, float, np.number)) or (isinstance(value, (list, tuple)) and value)
    ):
        raise ValueError(f"{where}: {key} must be a number, a list of numbers or {FIT_FROM_TRAIN!r}, got {value!r}")
    try:
        values = [float(value)] * (channels or 1) if not isinstance(value, (list, tuple)) else [float(v) for v in value]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {key} must be numbers, got {value!r}") from err
    if channels is not None and len(values) != channels:
        raise ValueError(f"{where}: {key} needs {channels} values (one per {unit}), got {value!r}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where}: {key} must be finite, got {value!r}")
    if key == "std" and min(values) <= 0:
        raise ValueError(f"{where}: std must be positive, got {value!r}")
    return values if channels is not None or isinstance(value, (list, tuple)) else values[0]


def _resolve_mean_std(cfg: dict[str, Any], size_key: str | None, where: str, unit: str = "channel") -> None:
    """Check ``mean`` / ``std`` against ``cfg[size_key]`` (channels, dim); a list fixes an open size."""
    size = cfg[size_key] if size_key else 1
    for key in ("mean", "std"):
        cfg[key] = _as_channel_list(cfg[key], size, key, where, unit)
        if size_key and size is None and isinstance(cfg[key], list):
            size = cfg[size_key] = len(cfg[key])
    if size_key:  # a scalar given while the size was open: one value per channel / feature, now that it is known
        for key in ("mean", "std"):
            cfg[key] = _as_channel_list(cfg[key], cfg[size_key], key, where, unit)
    if (cfg["mean"] is None) != (cfg["std"] is None):
        raise ValueError(f"{where}: give both mean and std, or neither")
    if (cfg["mean"] == FIT_FROM_TRAIN) != (cfg["std"] == FIT_FROM_TRAIN):
        raise ValueError(f"{where}: mean and std are computed from the training split together: set both to "
                         f"{FIT_FROM_TRAIN!r}")


def _positive_int(cfg: dict[str, Any], key: str, where: str, required: bool = False) -> None:
    value = cfg[key]
    if value is None and not required:
        return
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{where}: {key} must be a positive int, got {value!r}")
    cfg[key] = int(value)


def resolve_modality_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate one modality dict and fill in every default of its kind.

    Unknown keys are rejected (a misspelt key would otherwise be silently ignored), tuples become
    lists, so that the result round-trips through JSON unchanged.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"a modality config must be a dict, got {type(config).__name__}")
    name, kind = config.get("name"), config.get("kind")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"modality name must be a Python identifier string, got {name!r}")
    where = f"modality {name!r}"
    if name in _RESERVED_NAMES:
        raise ValueError(f"{where}: the name is reserved ({sorted(_RESERVED_NAMES)})")
    if kind not in PROCESSOR_KINDS:
        raise ValueError(f"{where}: kind must be one of {PROCESSOR_KINDS}, got {kind!r}")
    defaults = MODALITY_DEFAULTS[kind]
    unknown = sorted(set(config) - set(defaults) - {"name", "kind"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for kind {kind!r}; allowed: {sorted(defaults)}")
    cfg: dict[str, Any] = {"name": name, "kind": kind}
    cfg.update(copy.deepcopy(defaults))
    cfg.update({k: copy.deepcopy(v) for k, v in config.items() if k not in ("name", "kind")})

    if kind == "audio":
        for key in ("sampling_rate", "n_fft", "hop_length"):
            _positive_int(cfg, key, where, required=True)
        if cfg["win_length"] is None:
            cfg["win_length"] = cfg["n_fft"]
        _positive_int(cfg, "win_length", where, required=True)
        if cfg["win_length"] > cfg["n_fft"]:
            raise ValueError(f"{where}: win_length {cfg['win_length']} exceeds n_fft {cfg['n_fft']}")
        if not isinstance(cfg["duration"], (int, float)) or cfg["duration"] <= 0:
            raise ValueError(f"{where}: duration must be a positive number of seconds, got {cfg['duration']!r}")
        cfg["duration"] = float(cfg["duration"])
        if cfg["short_clip"] not in ("tile", "zero_pad"):
            raise ValueError(f"{where}: short_clip must be 'tile' or 'zero_pad', got {cfg['short_clip']!r}")
        if cfg["window"] not in ("hann", "tukey"):
            raise ValueError(f"{where}: window must be 'hann' or 'tukey', got {cfg['window']!r}")
        if cfg["stft_style"] not in ("librosa", "scipy"):
            raise ValueError(f"{where}: stft_style must be 'librosa' or 'scipy', got {cfg['stft_style']!r}")
        if cfg["stft_style"] == "scipy" and cfg["center"]:
            raise ValueError(f"{where}: stft_style='scipy' frames the signal without centring: set center=False")
        if cfg["pad_mode"] not in ("constant", "reflect"):
            raise ValueError(f"{where}: pad_mode must be 'constant' or 'reflect', got {cfg['pad_mode']!r}")
        if cfg["resampling"] != "sinc_lowpass_linear":
            raise ValueError(f"{where}: only resampling='sinc_lowpass_linear' is implemented")
        if not cfg["center"] and _num_samples(cfg) < max(cfg["n_fft"], cfg["win_length"]):
            raise ValueError(f"{where}: duration x sampling_rate is shorter than n_fft")
        cfg["log_offset"] = float(cfg["log_offset"])
        cfg["normalize_eps"] = float(cfg["normalize_eps"])
    elif kind == "spectrogram":
        _positive_int(cfg, "num_frames", where)
        _positive_int(cfg, "n_bins", where)
        if cfg["time_resize"] not in ("interpolate", "tile_crop"):
            raise ValueError(f"{where}: time_resize must be 'interpolate' or 'tile_crop', got {cfg['time_resize']!r}")
        cfg["normalize_eps"] = float(cfg["normalize_eps"])
        _resolve_mean_std(cfg, None, where)
    elif kind == "sequence":
        _positive_int(cfg, "channels", where)
        _positive_int(cfg, "num_frames", where)
        if cfg["time_resize"] not in _SEQUENCE_RESIZES:
            raise ValueError(f"{where}: time_resize must be one of {_SEQUENCE_RESIZES}, got {cfg['time_resize']!r}")
        cfg["random_crop"] = bool(cfg["random_crop"])
        if cfg["random_crop"] and cfg["time_resize"] != "crop_pad":
            raise ValueError(f"{where}: random_crop needs time_resize='crop_pad'")
        _resolve_mean_std(cfg, "channels", where)
    elif kind in ("image", "frames"):
        if kind == "frames":
            _positive_int(cfg, "num_frames", where, required=True)
            if cfg["frame_sampling"] not in _FRAME_SAMPLINGS:
                raise ValueError(
                    f"{where}: frame_sampling must be one of {_FRAME_SAMPLINGS}, got {cfg['frame_sampling']!r}"
                )
        _positive_int(cfg, "channels", where, required=True)
        if cfg["channels"] > 4:
            raise ValueError(f"{where}: channels must be 1..4, got {cfg['channels']}")
        cfg["image_size"] = _as_size(cfg["image_size"], where)
        _resolve_mean_std(cfg, "channels", where)
        if cfg["value_range"] is not None:
            low, high = (float(v) for v in cfg["value_range"])
            if not high > low:
                raise ValueError(
                    f"{where}: value_range must be [low, high] with high > low, got {cfg['value_range']!r}"
                )
            cfg["value_range"] = [low, high]
        if cfg["interpolation"] not in _INTERPOLATIONS:
            raise ValueError(f"{where}: interpolation must be one of {_INTERPOLATIONS}, got {cfg['interpolation']!r}")
        if cfg["random_resized_crop"] is not None:
            low, high = (float(v) for v in cfg["random_resized_crop"])
            if not 0 < low <= high <= 1:
                raise ValueError(f"{where}: random_resized_crop must be [min_scale, max_scale] in (0, 1]")
            cfg["random_resized_crop"] = [low, high]
            if cfg["image_size"] is None:
                raise ValueError(f"{where}: random_resized_crop needs an image_size to resize the crops to")
        if cfg["random_crop"] is not None:
            cfg["random_crop"] = _as_size(cfg["random_crop"], f"{where} (random_crop)")
            if cfg["random_resized_crop"] is not None:
                raise ValueError(f"{where}: give random_crop or random_resized_crop, not both")
        cfg["random_flip"] = bool(cfg["random_flip"])
        inverted = [int(c) for c in cfg["flip_inverts_channels"]]
        if any(not 0 <= c < cfg["channels"] for c in inverted):
            raise ValueError(f"{where}: flip_inverts_channels {inverted} out of range for {cfg['channels']} channels")
        cfg["flip_inverts_channels"] = inverted
    elif kind == "vector":
        _positive_int(cfg, "dim", where)
        _resolve_mean_std(cfg, "dim", where, unit="feature")
    return cfg


# --------------------------------------------------------------------------------------------
# Audio: WAV reading, resampling and the pinned spectrogram recipe
# --------------------------------------------------------------------------------------------


def read_wav(source: str | os.PathLike | bytes, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Read a RIFF/WAVE file (path or bytes) into ``(channels, n)`` float32 in [-1, 1] and its rate.

    A small ``struct`` chunk parser rather than the stdlib ``wave`` module, because ``wave``
    (Python < 3.12) rejects IEEE-float and WAVE_FORMAT_EXTENSIBLE files, which many tools write.
    Supports integer PCM (8/16/24/32 bit) and float (32/64 bit).

    The file is streamed: chunks other than ``fmt `` and ``data`` are skipped unread, and with
    ``max_seconds`` only the first ``ceil(max_seconds * rate)`` sample frames of ``data`` are read
    (what a recipe uses, see :func:`audio_read_seconds`), so memory follows the recipe, not the
    file. A ``data`` chunk that claims more bytes than the file holds (a streamed recording whose
    header was never rewritten) is read up to the end of the file.

    Raises ``ValueError`` naming the file when it cannot be read, is not such a WAV, or its header
    is implausible: a sample rate outside 1 kHz..768 kHz, more than 16 channels, a block size that
    does not match the channels, no complete sample frame.
    """
    label = "<bytes>" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    try:
        handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    except OSError as err:
        raise ValueError(f"cannot read WAV file {label}: {err}") from err
    with handle:
        try:
            return _parse_wav(handle, label, max_seconds)
        except OSError as err:  # a read failing mid-file (I/O error, file removed on a network drive)
            raise ValueError(f"cannot read WAV file {label}: {err}") from err


def _parse_wav(handle: Any, label: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    header = handle.read(12)
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        raise ValueError(f"unreadable WAV file {label}: not a RIFF/WAVE file")
    fmt_chunk, data_offset, data_size = None, None, 0
    while fmt_chunk is None or data_offset is None:
        chunk_header = handle.read(8)
        if len(chunk_header) < 8:
            break
        chunk_id, (chunk_size,) = chunk_header[:4], struct.unpack("<I", chunk_header[4:])
        if chunk_id == b"fmt ":
            if not 16 <= chunk_size <= _MAX_FMT_CHUNK:
                raise ValueError(
                    f"unreadable WAV file {label}: 'fmt ' chunk of {chunk_size} bytes (expected 16..{_MAX_FMT_CHUNK})"
                )
            fmt_chunk = handle.read(chunk_size)
            handle.seek(chunk_size & 1, os.SEEK_CUR)  # chunks are word-aligned
        else:
            if chunk_id == b"data":
                data_offset, data_size = handle.tell(), chunk_size
            handle.seek(chunk_size + (chunk_size & 1), os.SEEK_CUR)  # skipped unread; past the end is allowed
    if fmt_chunk is None or len(fmt_chunk) < 16 or data_offset is None:
        raise ValueError(f"unreadable WAV file {label}: missing 'fmt ' or 'data' chunk")
    format_tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", fmt_chunk[:16])
    if format_tag == 0xFFFE and len(fmt_chunk) >= 26:  # WAVE_FORMAT_EXTENSIBLE: real tag in the sub-format GUID
        (format_tag,) = struct.unpack("<H", fmt_chunk[24:26])
    low_rate, high_rate = _SAMPLING_RATE_RANGE
    if not low_rate <= rate <= high_rate:
        raise ValueError(
            f"unreadable WAV file {label}: the header's sample rate {rate} Hz is outside {low_rate}..{high_rate} Hz"
        )
    if not 1 <= channels <= _MAX_AUDIO_CHANNELS:
        raise ValueError(
            f"unreadable WAV file {label}: the header claims {channels} channels (expected 1..{_MAX_AUDIO_CHANNELS})"
        )
    width = block_align // channels
    if block_align < 1 or block_align != width * channels:
        raise ValueError(
            f"unreadable WAV file {label}: block size {block_align} bytes is not a whole number of bytes for each of "
            f"{channels} channel(s)"
        )
    if not ((format_tag == 1 and width in (1, 2, 3, 4)) or (format_tag == 3 and width in (4, 8))):
        raise ValueError(f"unreadable WAV file {label}: unsupported format tag {format_tag} with {bits}-bit samples")
    wanted_bytes = data_size
    if max_seconds is not None:
        wanted_bytes = min(wanted_bytes, int(math.ceil(max_seconds * rate)) * block_align)
    handle.seek(data_offset)
    sample_bytes = handle.read(wanted_bytes)
    frames = len(sample_bytes) // block_align
    if frames == 0:
        raise ValueError(
            f"unreadable WAV file {label}: the 'data' chunk holds no complete sample frame "
            f"({len(sample_bytes)} byte(s), {block_align} per frame)"
        )
    raw = np.frombuffer(sample_bytes[: frames * block_align], dtype=np.uint8).reshape(frames, channels, width)
    if format_tag == 1 and width == 1:
        samples = (raw[..., 0].astype(np.float32) - 128.0) / 128.0
    elif format_tag == 1:
        # Little-endian signed integers: place the bytes in the top of an int32, then scale.
        padded = np.zeros((frames, channels, 4), dtype=np.uint8)
        padded[..., 4 - width :] = raw
        samples = (padded.view("<i4")[..., 0].astype(np.float64) / 2.0**31).astype(np.float32)
    else:
        samples = raw.reshape(frames, channels * width).view("<f4" if width == 4 else "<f8").astype(np.float32)
    return np.ascontiguousarray(samples.reshape(frames, channels).T), int(rate)


def resample_waveform(waveform: np.ndarray, orig_sampling_rate: int, target_sampling_rate: int) -> np.ndarray:
    """Resample ``(channels, n)`` (or ``(n,)``) audio to ``round(n * target / orig)`` samples.

    Method (``"sinc_lowpass_linear"``): when downsampling, a Hann-windowed sinc low-pass at the new
    Nyquist frequency (8 zero crossings each side) removes what would alias; then the signal is
    linearly interpolated at the output instants ``j * orig / target``. Upsampling is linear
    interpolation alone. Dependency-free and deterministic; not a polyphase/Kaiser resampler, so
    it is slightly softer near the new Nyquist frequency than ``librosa``'s default.
    """
    squeeze = waveform.ndim == 1
    signal = np.atleast_2d(np.asarray(waveform, dtype=np.float64))
    if orig_sampling_rate == target_sampling_rate:
        out = signal
    else:
        ratio = target_sampling_rate / orig_sampling_rate
        length = signal.shape[-1]
        if ratio < 1:
            half = int(math.ceil(8 / ratio))
            taps = np.arange(-half, half + 1)
            kernel = np.sinc(ratio * taps) * np.hanning(2 * half + 1)
            kernel /= kernel.sum()  # unit DC gain
            signal = np.stack([np.convolve(channel, kernel, mode="full")[half : half + length] for channel in signal])
        out_length = max(1, int(round(length * ratio)))
        instants = np.arange(out_length) / ratio
        grid = np.arange(length)
        out = np.stack([np.interp(instants, grid, channel) for channel in signal])
    out = out.astype(np.float32)
    return out[0] if squeeze else out


def _num_samples(recipe: Mapping[str, Any]) -> int:
    return int(round(recipe["duration"] * recipe["sampling_rate"]))


def spectrogram_shape(recipe: Mapping[str, Any]) -> tuple[int, int]:
    """``(F, T)`` that :func:`compute_audio_spectrogram` returns for an audio modality config."""
    cfg = resolve_modality_config(
        {"name": "audio", **{k: v for k, v in recipe.items() if k != "name"}, "kind": "audio"}
    )
    n = _num_samples(cfg)
    segment = cfg["win_length"] if cfg["stft_style"] == "scipy" else cfg["n_fft"]
    frames = 1 + n // cfg["hop_length"] if cfg["center"] else 1 + (n - segment) // cfg["hop_length"]
    return cfg["n_fft"] // 2 + 1, frames


def _window(cfg: Mapping[str, Any]) -> np.ndarray:
    """The periodic analysis window of ``win_length`` samples (scipy ``get_window(name, M, fftbins=True)``)."""
    length = cfg["win_length"]
    if cfg["window"] == "hann":
        return torch.hann_window(length, periodic=True, dtype=torch.float64).numpy()
    # Tukey, alpha 0.25 (scipy.signal.spectrogram's default window): the symmetric window of length + 1, last dropped.
    alpha, size = 0.25, length + 1
    n = np.arange(size, dtype=np.float64)
    width = int(np.floor(alpha * (size - 1) / 2.0))
    window = np.ones(size)
    window[: width + 1] = 0.5 * (1 + np.cos(np.pi * (-1 + 2.0 * n[: width + 1] / alpha / (size - 1))))
    tail = n[size - width - 1 :]
    window[size - width - 1 :] = 0.5 * (1 + np.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * tail / alpha / (size - 1))))
    return window[:length]


def _scipy_style_spectrogram(signal: np.ndarray, cfg: Mapping[str, Any]) -> torch.Tensor:
    """``log(P + log_offset)`` with ``P`` what ``scipy.signal.spectrogram(x, fs, window, nperseg=win_length,
    noverlap=win_length - hop_length, nfft=n_fft)`` returns with its other defaults: segments of ``win_length``
    samples every ``hop_length`` (no padding), each minus its mean (``detrend='constant'``), windowed, and
    ``|rfft|^2 / (fs * sum(window^2))`` with the bins other than DC and Nyquist doubled (one-sided density)."""
    window = _window(cfg)
    segments = np.lib.stride_tricks.sliding_window_view(signal.astype(np.float64), cfg["win_length"])
    segments = segments[:: cfg["hop_length"]]
    segments = (segments - segments.mean(axis=1, keepdims=True)) * window
    power = np.abs(np.fft.rfft(segments, n=cfg["n_fft"], axis=1)) ** 2 / (cfg["sampling_rate"] * (window**2).sum())
    power[:, 1 : None if cfg["n_fft"] % 2 else -1] *= 2
    return torch.from_numpy(np.log(power.T + cfg["log_offset"]).astype(np.float32))


def _check_sampling_rate(rate: Any) -> int:
    """A whole number of Hz within `_SAMPLING_RATE_RANGE`; anything else is a named ValueError."""
    low, high = _SAMPLING_RATE_RANGE
    valid = isinstance(rate, (int, float, np.integer, np.floating)) and not isinstance(rate, (bool, np.bool_))
    if not valid or not math.isfinite(rate) or rate != int(rate) or not low <= rate <= high:
        raise ValueError(f"expected a sampling rate of a whole number of Hz in {low}..{high}, got {rate!r}")
    return int(rate)


def _frames_needed(cfg: Mapping[str, Any], orig_sampling_rate: int) -> int:
    """Input samples (at ``orig_sampling_rate``) on which the recipe's first ``duration`` seconds depend.

    Output sample j (j < n = duration x rate) interpolates input instants j / ratio, and the
    anti-alias filter of a downsampling reaches ``half`` taps further (see :func:`resample_waveform`):
    the first ``ceil((n - 1) / ratio) + half + 2`` input samples determine them all.
    """
    ratio = cfg["sampling_rate"] / orig_sampling_rate
    half = int(math.ceil(8 / ratio)) if ratio < 1 else 0
    return int(math.ceil((_num_samples(cfg) - 1) / ratio)) + half + 2


def audio_read_seconds(recipe: Mapping[str, Any]) -> float:
    """Seconds of a recording that :func:`compute_audio_spectrogram` can use under ``recipe``.

    ``duration`` plus the resampling filter's reach, at the worst source rate: pass it to
    :func:`read_wav` (``max_seconds``) so that a long or mislabelled file is never read whole.
    """
    cfg = resolve_modality_config(
        {"name": "audio", **{k: v for k, v in recipe.items() if k != "name"}, "kind": "audio"}
    )
    return cfg["duration"] + (8 + 1) / cfg["sampling_rate"] + 3 / _SAMPLING_RATE_RANGE[0]


def compute_audio_spectrogram(waveform: Any, orig_sampling_rate: int, recipe: Mapping[str, Any]) -> np.ndarray:
    """The pinned audio recipe: raw waveform -> ``(F, T)`` float32 log-magnitude spectrogram.

    Steps, in order: mono mix (mean over channels; a 2-D input's channel axis is its shorter
    one) -> resample to ``sampling_rate`` (:func:`resample_waveform`; only the input samples the
    first ``duration`` seconds depend on are resampled, with identical results) -> tile (or zero-pad) a
    shorter clip and crop to its first ``duration`` seconds -> clip to [-1, 1] ->
    ``torch.stft`` (periodic Hann window ``win_length``, ``n_fft``, ``hop_length``, ``center``
    with ``pad_mode``) -> ``log(|STFT| + log_offset)`` -> per-clip z-score. The defaults are the
    OGM-GE line for CREMA-D (22.05 kHz, 3 s, n_fft 512, hop 353: ``(257, 188)``).

    ``recipe`` is an audio modality config (missing keys take their defaults).
    """
    cfg = resolve_modality_config(
        {"name": "audio", **{k: v for k, v in recipe.items() if k != "name"}, "kind": "audio"}
    )
    orig_sampling_rate = _check_sampling_rate(orig_sampling_rate)
    signal = _numeric_array(waveform, "a 1-D or (channels, samples) waveform", np.float32)
    # Only the first `duration` seconds are used: cropping before resampling bounds time and memory by the recipe,
    # not by the clip, and gives exactly the samples that resampling the whole clip would (see `_frames_needed`).
    keep = _frames_needed(cfg, orig_sampling_rate)
    if signal.ndim == 2:
        if min(signal.shape) > _MAX_AUDIO_CHANNELS:
            raise ValueError(
                f"expected a 1-D waveform or (channels, samples) with at most {_MAX_AUDIO_CHANNELS} channels, "
                f"got shape {signal.shape}"
            )
        if signal.shape[0] > signal.shape[1]:
            signal = signal.T  # given as (samples, channels): the channel axis is the shorter one
        signal = signal[:, :keep].mean(axis=0)
    if signal.ndim != 1:
        raise ValueError(f"expected a 1-D or (channels, samples) waveform, got shape {signal.shape}")
    signal = signal[:keep]
    if orig_sampling_rate != cfg["sampling_rate"]:
        signal = resample_waveform(signal, orig_sampling_rate, cfg["sampling_rate"])
    target = _num_samples(cfg)
    if signal.size < target:
        if cfg["short_clip"] == "tile":
            signal = np.tile(signal, int(math.ceil(target / signal.size)))
        else:
            signal = np.pad(signal, (0, target - signal.size))
    signal = signal[:target]
    if cfg["clip_amplitude"]:
        signal = np.clip(signal, -1.0, 1.0)
    if cfg["stft_style"] == "scipy":
        spectrogram = _scipy_style_spectrogram(signal, cfg)
    else:
        stft = torch.stft(
            torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32)),
            n_fft=cfg["n_fft"],
            hop_length=cfg["hop_length"],
            win_length=cfg["win_length"],
            window=(
                torch.hann_window(cfg["win_length"], periodic=True, dtype=torch.float32)
                if cfg["window"] == "hann"
                else torch.from_numpy(_window(cfg)).float()
            ),
            center=cfg["center"],
            pad_mode=cfg["pad_mode"],
            return_complex=True,
        )
        spectrogram = torch.log(stft.abs() + cfg["log_offset"])
    if cfg["normalize"]:
        spectrogram = (spectrogram - spectrogram.mean()) / (spectrogram.std(unbiased=False) + cfg["normalize_eps"])
    return spectrogram.numpy().astype(np.float32)


# --------------------------------------------------------------------------------------------
# Input inspection helpers
# --------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number, bool, np.bool_))


def _numeric_depth(value: Any) -> int | None:
    """Nesting depth of a nested list of numbers (``[1, 2]`` -> 1), ``None`` when not numeric."""
    depth = 0
    while isinstance(value, (list, tuple)):
        if len(value) == 0:
            return None
        value, depth = value[0], depth + 1
    return depth if _is_number(value) else None


def _is_array(value: Any) -> bool:
    return isinstance(value, (np.ndarray, torch.Tensor))


def _is_rate_pair(value: Any) -> bool:
    """``(waveform, sampling_rate)``: a 2-item tuple/list whose second item is an integer rate."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and isinstance(value[1], (int, np.integer))
        and not isinstance(value[1], (bool, np.bool_))
        and (_is_array(value[0]) or isinstance(value[0], (list, tuple)))
    )


def _numeric_array(value: Any, what: str, dtype: Any = None, where: str | None = None) -> np.ndarray:
    """``value`` as a non-empty numpy array of finite real numbers (cast to ``dtype`` when given).

    The one validation of every numeric input, whatever its kind or shortcut (image and frame
    arrays, decoded pixels, spectrograms, waveforms, the precomputed-spectrogram shortcut of the
    audio kind, vectors): a wrong type or dtype, a ragged list, an empty array, NaN or infinity
    (also one that a cast to ``dtype`` creates) is a ``ValueError`` saying where, what was expected
    (``what``) and what came. Rank, shape and channels are each kind's own checks.
    """
    prefix = f"{where}: " if where else ""
    fresh = False  # whether `array` was made here (from a nested list), so that a cast need not copy it
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.is_floating_point() and tensor.dtype not in (torch.float16, torch.float32, torch.float64):
            tensor = tensor.float()  # bfloat16, float8: numpy has no such dtype (exact in float32)
        array = tensor.numpy()
    elif isinstance(value, np.ndarray):
        array = value
    elif _is_number(value) or _numeric_depth(value) is not None:
        try:
            # Straight to `dtype`: a `datasets` Array2D row skips a float64 intermediate (~1.5x faster).
            with np.errstate(over="ignore"):  # an overflow to inf is reported below, as a ValueError
                array, fresh = np.asarray(value, dtype=dtype), True
        except (ValueError, TypeError) as err:  # ragged nesting, a string or None among the numbers
            raise ValueError(f"{prefix}expected {what}, got a nested list that is not a numeric array ({err})") from err
    else:
        raise ValueError(f"{prefix}expected {what}, got {_describe(value)}")
    if array.dtype.kind not in "buif":
        raise ValueError(f"{prefix}expected {what} of real numbers, got dtype {array.dtype}")
    if array.size == 0:
        raise ValueError(f"{prefix}expected {what}, got an empty array of shape {array.shape}")
    if dtype is not None and not (fresh and array.dtype == dtype):
        with np.errstate(over="ignore"):
            array = array.astype(dtype)  # a private copy: the caller's array or tensor is never aliased
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            nan = int(np.isnan(array).sum())
            raise ValueError(
                f"{prefix}expected {what} of finite numbers, got {nan} NaN and {int(finite.size - finite.sum()) - nan} "
                f"infinite value(s) (in dtype {array.dtype})"
            )
    return array


def _is_encoded_source(value: Any) -> bool:
    """A still-encoded file (image or WAV): path, bytes, or a ``datasets`` ``{"bytes", "path"}`` dict."""
    if isinstance(value, (bytes, bytearray)):
        return True
    if isinstance(value, (str, os.PathLike)):
        return not os.path.isdir(value)
    return isinstance(value, Mapping) and ("bytes" in value or "path" in value)


def _is_image_leaf(value: Any) -> bool:
    return isinstance(value, Image.Image) or _is_encoded_source(value) or (_is_array(value) and value.ndim in (2, 3))


def _describe(value: Any) -> str:
    if _is_array(value):
        return f"{type(value).__name__} of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of length {len(value)}"
    return type(value).__name__


def _mean_std(cfg: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The modality's normalisation statistics as float32 tensors (channel / feature axis first), or None."""
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is None:
        return None
    if mean == FIT_FROM_TRAIN or std == FIT_FROM_TRAIN:
        raise ValueError(
            f"modality {cfg['name']!r}: mean / std are {FIT_FROM_TRAIN!r} but were never computed: call "
            f"processor.fit_normalization(train_split) first (train.py does it for a user dataset)"
        )
    return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)


def _without_stats(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` with the dataset normalisation switched off (to measure the statistics, or shapes before a fit)."""
    return {**cfg, "mean": None, "std": None} if "mean" in cfg else dict(cfg)


# --------------------------------------------------------------------------------------------
# The processor
# --------------------------------------------------------------------------------------------


class DIMMLProcessor(FeatureExtractionMixin):
    r"""Turn raw modality inputs (waveforms, images, frame lists, spectrograms, vectors) into model tensors.

    One processor serves training (through :meth:`make_transform` on a ``datasets.Dataset``) and
    inference on a raw clip, so both use exactly the same code.

    Args:
        modalities (`list[dict]`): one dict per modality, ``name`` + ``kind`` + kind parameters
            (see ``MODALITY_DEFAULTS`` and the module docstring). Missing parameters take defaults;
            unknown ones raise ``ValueError``.

    Inputs accepted per kind (one sample, or a list of samples for a batch). Every numeric input,
    shortcuts included, goes through one check (`_numeric_array`): a wrong type or dtype, an empty
    array, NaN or infinity, and then a wrong rank, shape or channel count, is a ``ValueError``
    naming the modality, what was expected and what came. WAV sample rates must lie in
    1 kHz..768 kHz, and only the part of a recording the recipe uses is read and resampled.

    * ``audio``: a ``{"array", "sampling_rate"}`` dict (``datasets`` decoded audio), a
      ``(waveform, sampling_rate)`` tuple, a WAV path / bytes / ``{"path"|"bytes"}`` dict, or a
      bare 1-D / ``(channels, n)`` array at ``sampling_rate`` (the call argument, else the
      recipe's rate). A 2-D array whose shape is exactly the recipe's ``(F, T)`` is taken as an
      already computed spectrogram of this recipe (what the dataset builders store) and passed
      through unchanged.
    * ``spectrogram``: a ``(F, T)`` array (or ``(1, F, T)``).
    * ``image``: PIL image, array ``(H, W)`` / ``(H, W, C)`` / ``(C, H, W)`` (the channel axis is
      the one equal to ``channels``, last axis first), path, bytes, or ``{"bytes", "path"}``.
      Pixel values: 8-bit pixels (PIL images, image files, uint8 arrays) are scaled by 255, other
      pixels lie in ``value_range`` (default: floats in [0, 1], uint16 in 0..65535), so the same
      picture gives the same tensor in every form; values outside the range are an error, never
      clipped.
    * ``frames``: a list of frames (each as for ``image``, or a list of ``channels``
      single-channel planes, e.g. optical flow ``[u, v]``), an array ``(N, H, W[, C])``, or a
      directory of image files (sorted by name).
    * ``vector``: a 1-D array / list of numbers.
    * ``sequence``: a ``(C, T)`` array / nested list of any length T (a 1-D one when ``channels`` is 1).

    Frame sampling: ``train=True`` draws ``num_frames`` distinct frames at random (sorted, fresh on
    every call, from ``generator`` or torch's global RNG, which DataLoader workers reseed);
    ``train=False`` takes uniformly spaced frames, deterministically; ``frame_sampling="contiguous_window"`` takes
    ``num_frames`` consecutive frames instead (random start in training, centred at evaluation). Random crops / flips apply in
    train mode only and are shared by all frames of a clip. Nothing random happens at eval.
    """

    def __init__(self, modalities: Sequence[Mapping[str, Any]] | None = None, **kwargs: Any) -> None:
        kwargs.pop("feature_extractor_type", None)
        super().__init__(**kwargs)
        if not modalities:
            raise ValueError("DIMMLProcessor needs a non-empty list of modality configs")
        resolved = [resolve_modality_config(m) for m in modalities]
        names = [m["name"] for m in resolved]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate modality name(s): {duplicates}")
        self.modalities: list[dict[str, Any]] = resolved
        self._warned_sampling_rate = False

    # -- configuration -------------------------------------------------------------------

    @property
    def modality_names(self) -> list[str]:
        return [m["name"] for m in self.modalities]

    @property
    def model_input_names(self) -> list[str]:
        """The model inputs this processor produces (the modality names; ``labels`` comes from the data)."""
        return self.modality_names

    def modality_config(self, name: str) -> dict[str, Any]:
        """The resolved config dict of modality ``name``."""
        for cfg in self.modalities:
            if cfg["name"] == name:
                return cfg
        raise KeyError(f"unknown modality {name!r}; this processor has {self.modality_names}")

    def output_shape(self, name: str) -> tuple[int, ...] | None:
        """Shape of one processed sample of modality ``name`` (``None`` where it depends on the input)."""
        cfg = self.modality_config(name)
        kind = cfg["kind"]
        if kind == "audio":
            return (1, *spectrogram_shape(cfg))
        if kind == "spectrogram":
            return None if None in (cfg["n_bins"], cfg["num_frames"]) else (1, cfg["n_bins"], cfg["num_frames"])
        if kind == "sequence":
            return None if None in (cfg["channels"], cfg["num_frames"]) else (cfg["channels"], cfg["num_frames"])
        if kind in ("image", "frames"):
            if cfg["image_size"] is None:
                return None
            shape = (cfg["channels"], *cfg["image_size"])
            return shape if kind == "image" else (cfg["num_frames"], *shape)
        return None if cfg["dim"] is None else (cfg["dim"],)

    def record_open_sizes(self, example: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Fill the sizes the configs leave open from one raw example, and keep them in the configs.

        ``dim`` (vector), ``channels`` / ``num_frames`` (sequence), ``n_bins`` / ``num_frames`` (spectrogram) and
        ``image_size`` (image, frames) become the example's; from then on they are saved with the processor
        (``preprocessor_config.json``) and checked (or, for ``num_frames`` and ``image_size``, resized to) on every
        input. Modalities absent from ``example`` are left open. Returns ``{name: {key: size}}`` of what was filled.
        """
        filled: dict[str, dict[str, Any]] = {}
        for index, cfg in enumerate(self.modalities):
            name, kind = cfg["name"], cfg["kind"]
            keys = {"vector": ("dim",), "sequence": ("channels", "num_frames"),
                    "spectrogram": ("n_bins", "num_frames"), "image": ("image_size",),
                    "frames": ("image_size",)}.get(kind, ())
            open_keys = [key for key in keys if cfg[key] is None]
            if not open_keys or name not in example:
                continue
            shape = tuple(self._process_sample(example[name], _without_stats(cfg), False, None, None).shape)
            # Sample shapes: vector (D,), sequence (C, T), spectrogram (1, F, T), image (C, H, W), frames (N, C, H, W).
            axes = {"vector": {"dim": 0}, "sequence": {"channels": 0, "num_frames": 1},
                    "spectrogram": {"n_bins": 1, "num_frames": 2}}.get(kind)
            sizes = {key: shape[axis] for key, axis in axes.items()} if axes else {"image_size": list(shape[-2:])}
            filled[name] = {key: sizes[key] for key in open_keys}
            self.modalities[index] = resolve_modality_config({**cfg, **filled[name]})
        return filled

    def fit_normalization(
        self, train_data: Any, names: Sequence[str] | None = None, batch_size: int = 256
    ) -> dict[str, dict[str, list[float]]]:
        """Compute ``mean`` / ``std`` from the training split's raw columns and store them in the configs.

        Args:
            train_data: the training split: a ``datasets.Dataset`` with a column per modality, or a mapping of
                modality name -> list of raw samples (what the processor takes, before any scaling).
            names: the modalities to fit; default: those whose config says ``mean: train`` / ``std: train``.
            batch_size: rows read at a time (a ``Dataset`` is never loaded whole).

        Statistics per kind, over every training sample (eval-mode processing, without the normalisation itself):
        ``vector`` per feature; ``sequence`` per channel over all time steps, at each series' own length (before the
        time resize); ``image`` / ``frames`` per channel over all pixels (of the frames taken at evaluation) after the
        resize and the [0, 1] scaling; ``spectrogram`` over all bins (one channel). The population standard deviation; a constant
        feature gets std 1. The result replaces ``mean`` / ``std``, so ``save_pretrained`` stores it and a saved
        processor applies it to raw inputs. Returns ``{name: {"mean": [...], "std": [...]}}``.
        """
        if names is None:
            names = [cfg["name"] for cfg in self.modalities if cfg.get("mean") == FIT_FROM_TRAIN]
        is_dataset = hasattr(train_data, "select_columns") and hasattr(train_data, "column_names")
        fitted: dict[str, dict[str, list[float]]] = {}
        for name in names:
            cfg = self.modality_config(name)
            where = f"modality {name!r}"
            if "mean" not in cfg:
                raise ValueError(f"{where}: kind {cfg['kind']!r} has no dataset normalisation (the audio recipe "
                                 "z-scores each clip: set normalize)")
            available = train_data.column_names if is_dataset else list(train_data)
            if name not in available:
                raise ValueError(f"{where}: the training data has no column {name!r} to compute mean / std from "
                                 f"(columns: {sorted(available)})")
            raw_cfg = _without_stats(cfg)
            count = len(train_data) if is_dataset else len(train_data[name])
            total = total_sq = None
            n = 0
            for start in range(0, count, batch_size):
                rows = train_data[start : start + batch_size][name] if is_dataset else \
                    train_data[name][start : start + batch_size]
                for sample in rows:
                    if cfg["kind"] == "sequence":
                        values = torch.from_numpy(self._sequence_array(sample, raw_cfg)).double()  # (C, T)
                        axes, weight = (1,), values.shape[1]
                    else:
                        values = self._process_sample(sample, raw_cfg, False, None, None).double()
                        channel_axis = {"vector": None, "frames": 1}.get(cfg["kind"], 0)
                        if channel_axis is None:
                            axes, weight = (), 1
                        else:
                            axes = tuple(a for a in range(values.dim()) if a != channel_axis)
                            weight = math.prod(values.shape[a] for a in axes)
                    sums = values.sum(dim=axes) if axes else values
                    sums_sq = (values * values).sum(dim=axes) if axes else values * values
                    if total is not None and sums.shape != total.shape:
                        raise ValueError(f"{where}: training samples differ in size ({tuple(total.shape)} vs "
                                         f"{tuple(sums.shape)} channels / features)")
                    total = sums if total is None else total + sums
                    total_sq = sums_sq if total_sq is None else total_sq + sums_sq
                    n += weight
            if total is None:
                raise ValueError(f"{where}: the training data is empty: no mean / std to compute")
            mean = total / n
            std = (total_sq / n - mean * mean).clamp_min(0.0).sqrt()
            std = torch.where(std > 1e-12 * mean.abs().clamp_min(1.0), std, torch.ones_like(std))
            fitted[name] = {"mean": [float(v) for v in mean.flatten()], "std": [float(v) for v in std.flatten()]}
            index = self.modality_names.index(name)
            self.modalities[index] = resolve_modality_config({**cfg, **fitted[name]})
        return fitted

    def to_dict(self) -> dict[str, Any]:
        output = {k: copy.deepcopy(v) for k, v in self.__dict__.items() if not k.startswith("_")}
        output["feature_extractor_type"] = self.__class__.__name__
        auto_map = output.get("auto_map")
        if isinstance(auto_map, dict) and "AutoFeatureExtractor" in auto_map:
            # AutoProcessor reads preprocessor_config.json too: let it find the same class.
            auto_map.setdefault("AutoProcessor", auto_map["AutoFeatureExtractor"])
        return output

    # -- transforms for datasets ---------------------------------------------------------

    def make_transform(self, train: bool, label_column: str = "labels") -> DIMMLTransform:
        """A picklable callable for ``datasets.Dataset.set_transform`` / ``with_transform``."""
        return DIMMLTransform(self, train=train, label_column=label_column)

    @property
    def train_transform(self) -> DIMMLTransform:
        return self.make_transform(train=True)

    @property
    def eval_transform(self) -> DIMMLTransform:
        return self.make_transform(train=False)

    # -- main entry point ----------------------------------------------------------------

    def __call__(
        self,
        train: bool = False,
        return_tensors: str = "pt",
        is_batched: bool | None = None,
        sampling_rate: int | None = None,
        generator: torch.Generator | None = None,
        **raw_modalities: Any,
    ) -> BatchFeature:
        """Process one sample or a batch per modality; returns a ``BatchFeature`` of stacked tensors.

        Args:
            train: training mode (random frame sampling and augmentation) or eval (deterministic).
            return_tensors: ``"pt"`` (torch) or ``"np"`` (numpy).
            is_batched: force the reading of every modality as a batch (``True``) or one sample;
                ``None`` guesses from the input structure (see the class docstring).
            sampling_rate: rate of bare audio arrays (dicts and WAV files carry their own).
            generator: ``torch.Generator`` for train-mode randomness (default: torch's global RNG).
            **raw_modalities: ``name=value`` for any subset of the configured modalities.
        """
        if return_tensors not in ("pt", "np"):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        if not raw_modalities:
            raise ValueError(f"no modality given; this processor expects some of {self.modality_names}")
        unknown = sorted(set(raw_modalities) - set(self.modality_names))
        if unknown:
            raise ValueError(f"unknown modality name(s) {unknown}; this processor has {self.modality_names}")
        outputs: dict[str, Any] = {}
        batch_sizes: dict[str, int] = {}
        for name, value in raw_modalities.items():
            cfg = self.modality_config(name)
            batched = self._is_batched(value, cfg) if is_batched is None else is_batched
            samples = self._as_sample_list(value, cfg) if batched else [value]
            if len(samples) == 0:
                raise ValueError(f"modality {name!r}: empty batch")
            tensors = [self._process_sample(sample, cfg, train, sampling_rate, generator) for sample in samples]
            shapes = {tuple(t.shape) for t in tensors}
            if len(shapes) > 1:
                raise ValueError(
                    f"modality {name!r}: samples processed to different shapes {sorted(shapes)}; "
                    f"set image_size / num_frames so that every sample has the same shape"
                )
            stacked = torch.stack(tensors)
            outputs[name] = stacked.numpy() if return_tensors == "np" else stacked
            batch_sizes[name] = len(tensors)
        if len(set(batch_sizes.values())) > 1:
            raise ValueError(f"modalities have different batch sizes: {batch_sizes}")
        return BatchFeature(data=outputs)

    # -- batching ------------------------------------------------------------------------

    @staticmethod
    def _as_sample_list(value: Any, cfg: Mapping[str, Any]) -> list[Any]:
        if _is_array(value):
            return list(value)
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ValueError(f"modality {cfg['name']!r}: a batch must be a list or an array, got {_describe(value)}")

    @staticmethod
    def _is_batched(value: Any, cfg: Mapping[str, Any]) -> bool:
        """Guess whether ``value`` is one sample or a batch of samples of this modality."""
        kind = cfg["kind"]
        if kind == "audio" and _is_rate_pair(value):
            return False  # (waveform, sampling_rate)
        depth = _numeric_depth(value) if isinstance(value, (list, tuple)) else None
        if _is_array(value) or depth is not None:
            ndim = value.ndim if _is_array(value) else depth
            single_ndims = {"audio": (1, 2), "spectrogram": (2,), "image": (2, 3), "frames": (3, 4), "vector": (1,),
                            "sequence": (1, 2) if cfg.get("channels") in (None, 1) else (2,)}[kind]
            return ndim not in single_ndims
        if isinstance(value, (list, tuple)) and value:
            first = value[0]
            if kind == "frames":
                if isinstance(first, (list, tuple)) and _numeric_depth(first) is None:
                    # A frame given as single-channel planes ([u, v] flow) versus a clip of frames: a plane alone
                    # cannot be a frame of a 2- or 4-channel modality, so the reading is unambiguous there.
                    plane = first[0] if first else None
                    planes_possible = (
                        cfg["channels"] not in (1, 3)
                        and len(first) == cfg["channels"]
                        and not isinstance(plane, (list, tuple))
                        and not (_is_array(plane) and plane.ndim != 2)
                    )
                    return not planes_possible
                if isinstance(first, (str, os.PathLike)) and os.path.isdir(first):
                    return True  # a list of clip directories
                return not _is_image_leaf(first)
            return True  # a list of samples
        return False

    # -- per-sample processing -----------------------------------------------------------

    def _process_sample(
        self,
        sample: Any,
        cfg: Mapping[str, Any],
        train: bool,
        sampling_rate: int | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        kind = cfg["kind"]
        if kind == "audio":
            return self._process_audio(sample, cfg, sampling_rate)
        if kind == "spectrogram":
            return self._process_spectrogram(sample, cfg)
        if kind == "image":
            image = self._to_chw(sample, cfg, f"modality {cfg['name']!r}")
            return self._finish_images([image], cfg, train, generator)[0]
        if kind == "frames":
            return self._process_frames(sample, cfg, train, generator)
        if kind == "sequence":
            return self._process_sequence(sample, cfg, train, generator)
        return self._process_vector(sample, cfg)

    def _process_audio(self, sample: Any, cfg: Mapping[str, Any], sampling_rate: int | None) -> torch.Tensor:
        where = f"modality {cfg['name']!r}"
        expected = spectrogram_shape(cfg)
        rate = sampling_rate
        if isinstance(sample, Mapping) and "array" in sample:
            waveform, rate = sample["array"], sample.get("sampling_rate", sampling_rate)
        elif _is_rate_pair(sample):
            waveform, rate = sample
        elif _is_encoded_source(sample):  # a WAV path, bytes or {"bytes", "path"} dict
            source = sample
            if isinstance(sample, Mapping):
                source = sample.get("bytes") or sample.get("path")
            if source is None:
                raise ValueError(f"{where}: audio dict has neither 'array', 'bytes' nor 'path'")
            try:
                waveform, rate = read_wav(source, max_seconds=audio_read_seconds(cfg))
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from err
        elif _is_array(sample) or _numeric_depth(sample) is not None:
            waveform = _numeric_array(sample, f"a waveform or a precomputed {expected} spectrogram", where=where)
            if waveform.ndim == 2 and tuple(waveform.shape) == expected:
                # An already computed spectrogram of this recipe (as the dataset builders store it).
                return torch.as_tensor(np.asarray(waveform, dtype=np.float32))[None]
        else:
            raise ValueError(
                f"{where}: expected a waveform (array, {{'array', 'sampling_rate'}} dict, (array, rate) tuple, "
                f"WAV path/bytes) or a precomputed {expected} spectrogram, got {_describe(sample)}"
            )
        if rate is None:
            if not self._warned_sampling_rate:
                logger.warning(
                    "%s: no sampling_rate given for a bare waveform; assuming the recipe's %d Hz",
                    where,
                    cfg["sampling_rate"],
                )
                self._warned_sampling_rate = True
            rate = cfg["sampling_rate"]
        array = _numeric_array(waveform, "a 1-D or (channels, samples) waveform", where=where)
        if array.ndim not in (1, 2):
            raise ValueError(f"{where}: expected a 1-D or (channels, samples) waveform, got shape {array.shape}")
        if array.ndim == 2 and min(array.shape) > _MAX_AUDIO_CHANNELS:
            raise ValueError(
                f"{where}: a 2-D input must be (channels, samples) with at most {_MAX_AUDIO_CHANNELS} channels "
                f"or a precomputed spectrogram of shape {expected}; got shape {array.shape}"
            )
        try:
            spectrogram = compute_audio_spectrogram(array, rate, cfg)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
        return torch.from_numpy(spectrogram)[None]

    @staticmethod
    def _process_spectrogram(sample: Any, cfg: Mapping[str, Any]) -> torch.Tensor:
        where = f"modality {cfg['name']!r}"
        if not (_is_array(sample) or _numeric_depth(sample) is not None):
            raise ValueError(f"{where}: expected a (frequency, time) array, got {_describe(sample)}")
        array = _numeric_array(sample, "a (frequency, time) spectrogram", np.float32, where)
        if array.ndim == 3 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 2:
            raise ValueError(f"{where}: expected a 2-D (frequency, time) array, got shape {array.shape}")
        if cfg["n_bins"] is not None and array.shape[0] != cfg["n_bins"]:
            hint = " (transposed? the layout is (frequency, time))" if array.shape[1] == cfg["n_bins"] else ""
            raise ValueError(f"{where}: expected {cfg['n_bins']} frequency bins, got shape {array.shape}{hint}")
        tensor = torch.from_numpy(array)
        num_frames = cfg["num_frames"]
        if num_frames is not None and tensor.shape[1] != num_frames:
            if cfg["time_resize"] == "interpolate":
                tensor = F.interpolate(tensor[None], size=num_frames, mode="linear", align_corners=False)[0]
            else:
                repeats = int(math.ceil(num_frames / tensor.shape[1]))
                tensor = tensor.repeat(1, repeats)[:, :num_frames]
        if cfg["normalize"]:
            tensor = (tensor - tensor.mean()) / (tensor.std(unbiased=False) + cfg["normalize_eps"])
        stats = _mean_std(cfg)
        if stats is not None:
            tensor = (tensor - stats[0]) / stats[1]
        return tensor.contiguous()[None]

    @staticmethod
    def _process_vector(sample: Any, cfg: Mapping[str, Any]) -> torch.Tensor:
        where = f"modality {cfg['name']!r}"
        if not (_is_array(sample) or _numeric_depth(sample) is not None or _is_number(sample)):
            raise ValueError(f"{where}: expected a 1-D numeric vector, got {_describe(sample)}")
        array = _numeric_array(sample, "a 1-D numeric vector", np.float32, where)
        if array.ndim != 1:
            raise ValueError(f"{where}: expected a 1-D vector, got shape {array.shape}")
        if cfg["dim"] is not None and array.shape[0] != cfg["dim"]:
            raise ValueError(f"{where}: expected a vector of length dim={cfg['dim']}, got length {array.shape[0]}")
        tensor = torch.from_numpy(array)
        stats = _mean_std(cfg)
        if stats is not None:
            tensor = (tensor - stats[0]) / stats[1]
        return tensor

    @staticmethod
    def _sequence_array(sample: Any, cfg: Mapping[str, Any]) -> np.ndarray:
        """One raw time series as a float32 ``(C, T)`` array of its own length (a 1-D one is ``(1, T)``)."""
        where = f"modality {cfg['name']!r}"
        channels = cfg["channels"]
        if not (_is_array(sample) or _numeric_depth(sample) is not None):
            raise ValueError(f"{where}: expected a (channels, time) array, got {_describe(sample)}")
        array = _numeric_array(sample, "a (channels, time) sequence", np.float32, where)
        if array.ndim == 1 and channels in (None, 1):
            array = array[None]
        if array.ndim != 2:
            raise ValueError(f"{where}: expected a 2-D (channels, time) array, got shape {array.shape}")
        if channels is not None and array.shape[0] != channels:
            hint = " (transposed? the layout is (channels, time))" if array.shape[1] == channels else ""
            raise ValueError(f"{where}: expected {channels} channel(s), got shape {array.shape}{hint}")
        return array

    def _process_sequence(self, sample: Any, cfg: Mapping[str, Any], train: bool,
                          generator: torch.Generator | None) -> torch.Tensor:
        """``(C, T)`` -> normalised per channel -> ``(C, num_frames)`` (interpolated, cropped / padded or tiled)."""
        tensor = torch.from_numpy(self._sequence_array(sample, cfg))
        stats = _mean_std(cfg)
        if stats is not None:
            tensor = (tensor - stats[0][:, None]) / stats[1][:, None]
        num_frames, length = cfg["num_frames"], tensor.shape[1]
        if num_frames is None or length == num_frames:
            return tensor.contiguous()
        mode = cfg["time_resize"]
        if mode == "interpolate":
            return F.interpolate(tensor[None], size=num_frames, mode="linear", align_corners=False)[0].contiguous()
        if mode == "tile_crop":
            return tensor.repeat(1, int(math.ceil(num_frames / length)))[:, :num_frames].contiguous()
        if length < num_frames:  # crop_pad: zeros (the mean, when normalised) after the end
            return F.pad(tensor, (0, num_frames - length)).contiguous()
        start = 0
        if train and cfg["random_crop"]:
            start = int(torch.randint(0, length - num_frames + 1, (1,), generator=generator))
        return tensor[:, start : start + num_frames].contiguous()

    # -- images and frames ---------------------------------------------------------------

    @staticmethod
    def _open_image(value: Any, where: str) -> Image.Image:
        source = value
        if isinstance(value, Mapping):
            source = value.get("bytes") or value.get("path")
            if source is None:
                raise ValueError(f"{where}: image dict has neither 'bytes' nor 'path'")
        label = "<bytes>" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
        try:
            image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
            image.load()
        except (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError) as err:
            # PIL's plugins do not keep to OSError for corrupt files: each of these is about the file, not the code.
            raise ValueError(f"{where}: cannot read image {label}: {type(err).__name__}: {err}") from err
        return image

    @classmethod
    def _to_chw(cls, value: Any, cfg: Mapping[str, Any], where: str) -> torch.Tensor:
        """One image (or a list of single-channel planes) -> float tensor (C, H, W) in [0, 1]."""
        channels = cfg["channels"]
        if isinstance(value, (list, tuple)) and _numeric_depth(value) is None:
            if len(value) != channels or channels == 1:
                raise ValueError(
                    f"{where}: a frame given as planes needs {channels} single-channel images, got {len(value)}"
                )
            planes = [cls._unit_float(cls._to_chw(plane, {**cfg, "channels": 1}, where)) for plane in value]
            if len({tuple(p.shape) for p in planes}) > 1:
                raise ValueError(
                    f"{where}: the planes of a frame differ in size: {[tuple(p.shape[1:]) for p in planes]}"
                )
            return torch.cat(planes)
        if _is_encoded_source(value):
            value = cls._open_image(value, where)
        if isinstance(value, Image.Image):
            if value.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                # High bit depth, kept in its dtype: uint16 is scaled by its range, int32 / float32 by value_range.
                array = np.asarray(value)
                if array.dtype.byteorder == ">":
                    array = array.astype(array.dtype.newbyteorder("="))
            else:
                mode = _PIL_MODE_BY_CHANNELS[channels]
                if channels == 2 and value.mode not in ("LA", "La"):
                    raise ValueError(
                        f"{where}: a 2-channel image must be PIL mode 'LA' or given as planes, got {value.mode!r}"
                    )
                array = np.asarray(value.convert(mode))
            array = _numeric_array(array, "an image", where=where)
            if array.ndim == 2:
                array = array[:, :, None]
            array = array.transpose(2, 0, 1)
        elif _is_array(value) or _numeric_depth(value) is not None:
            array = _numeric_array(value, "an image array", where=where)
            if array.ndim == 2:
                array = array[None]
            elif array.ndim == 3:
                if array.shape[-1] == channels or (channels == 3 and array.shape[-1] == 1 and array.shape[0] != 1):
                    array = array.transpose(2, 0, 1)  # (H, W, C), the numpy / PIL convention, wins ties
                elif not (array.shape[0] == channels or (channels == 3 and array.shape[0] == 1)):
                    raise ValueError(
                        f"{where}: expected (H, W), (H, W, {channels}) or ({channels}, H, W), got shape {array.shape}"
                    )
            else:
                raise ValueError(f"{where}: expected an image array (H, W[, C]) or (C, H, W), got shape {array.shape}")
        else:
            raise ValueError(
                f"{where}: expected an image (PIL, array, path, bytes or {{'bytes','path'}} dict), "
                f"got {_describe(value)}"
            )
        tensor = cls._scale_to_unit(array, cfg, where)
        if tensor.shape[0] == 1 and channels == 3:
            tensor = tensor.expand(3, -1, -1)  # grey image for an RGB modality: replicate
        if tensor.shape[0] != channels:
            raise ValueError(f"{where}: expected {channels} channel(s), got {tensor.shape[0]}")
        if min(tensor.shape[1:]) < 1:
            raise ValueError(f"{where}: empty image of shape {tuple(tensor.shape)}")
        return tensor

    @staticmethod
    def _scale_to_unit(array: np.ndarray, cfg: Mapping[str, Any], where: str) -> torch.Tensor:
        """Pixels (finite, see `_numeric_array`) -> float in [0, 1]; 8-bit pixels stay uint8 here (see `_unit_float`).

        8-bit images carry their own scale: bool and uint8 (8-bit PIL modes and files) pixels are
        divided by 1 and 255, whatever ``value_range`` says, because ``value_range`` states which raw
        *numbers* mean black and white, and an 8-bit depth already states it. (Applying
        ``value_range=[0, 1]`` to 8-bit pixels made every non-zero pixel white: issue 13.) Floats and
        other integers are mapped by ``value_range``; without one, floats lie in [0, 1], uint16
        (16-bit PNG / TIFF) in 0..65535 and other integers in 0..255. A 16-bit file often holds 10-
        or 12-bit data, so an explicit ``value_range`` keeps describing it, as before. Values outside
        the range are an error, never clipped: clipping is what hid the saturation.
        """
        scaled_by_depth = array.dtype in _FIXED_DEPTHS or cfg["value_range"] is None
        depth_max = _IMAGE_DEPTH_MAX.get(array.dtype) if scaled_by_depth else None
        if array.dtype == np.uint8:
            # Converted after the crop and the resize, by `_unit_float`: fewer pixels, and 8-bit resizing is faster.
            return torch.from_numpy(array if array.flags.writeable else array.copy())
        if depth_max is not None:
            return torch.from_numpy(np.ascontiguousarray(array.astype(np.float32) / depth_max))
        if cfg["value_range"] is not None:
            low, high = cfg["value_range"]
            setting = f"value_range=[{low:g}, {high:g}]"
        elif np.issubdtype(array.dtype, np.integer):
            (low, high), setting = (0.0, 255.0), "0..255 for integer pixels without value_range"
        else:
            (low, high), setting = (0.0, 1.0), "[0, 1] for float pixels without value_range"
        scaled = (array.astype(np.float32) - low) / (high - low)
        if float(scaled.min()) < -_OUT_OF_RANGE_TOLERANCE or float(scaled.max()) > 1 + _OUT_OF_RANGE_TOLERANCE:
            if high <= 1 and 0 <= array.min() and array.max() <= 255:  # 8-bit levels in a wider dtype
                hint = "; give 8-bit pixels as uint8 (or a PIL image / file), which is scaled by 255"
            else:
                hint = "; set value_range=[low, high] in the modality config to the range of the data"
            raise ValueError(
                f"{where}: {array.dtype} pixels outside the expected range ({setting}): got "
                f"{array.min():.6g}..{array.max():.6g}{hint}"
            )
        return torch.from_numpy(np.ascontiguousarray(np.clip(scaled, 0.0, 1.0)))

    @staticmethod
    def _unit_float(image: torch.Tensor) -> torch.Tensor:
        """8-bit pixels / 255 as float32; other images are already float in [0, 1]."""
        return image.float().div_(255.0) if image.dtype == torch.uint8 else image

    @staticmethod
    def _crop_box(
        height: int, width: int, scale: Sequence[float], generator: torch.Generator | None
    ) -> tuple[int, int, int, int]:
        """Random-resized-crop box (top, left, h, w), torchvision's algorithm (aspect ratio 3/4..4/3)."""
        area = height * width
        log_ratio = (math.log(3 / 4), math.log(4 / 3))
        for _ in range(10):
            target_area = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=generator))
            aspect = math.exp(float(torch.empty(1).uniform_(*log_ratio, generator=generator)))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
                left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
                return top, left, h, w
        side = min(height, width)  # fallback: central square crop
        return (height - side) // 2, (width - side) // 2, side, side

    @staticmethod
    def _fixed_size_crop(
        images: list[torch.Tensor], size: Sequence[int], train: bool, generator: torch.Generator | None
    ) -> list[torch.Tensor]:
        """A ``size`` crop without resizing, one box for all images: random in training, centred at evaluation
        (DI-MML's UCF101 GroupRandomCrop / GroupCenterCrop); images smaller than ``size`` are resized to it."""
        crop_h, crop_w = size
        height, width = images[0].shape[1:]
        if height < crop_h or width < crop_w:
            return [
                F.interpolate(image[None], size=(crop_h, crop_w), mode="bilinear", align_corners=False,
                              antialias=True)[0]
                for image in images
            ]
        if train:
            top = int(torch.randint(0, height - crop_h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - crop_w + 1, (1,), generator=generator))
        else:  # torchvision CenterCrop's rounding
            top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
        return [image[:, top : top + crop_h, left : left + crop_w] for image in images]

    @classmethod
    def _finish_images(
        cls, images: list[torch.Tensor], cfg: Mapping[str, Any], train: bool, generator: torch.Generator | None
    ) -> list[torch.Tensor]:
        """Crop (train), resize, flip (train) and normalise; the random draws are shared by all images."""
        crop = train and cfg["random_resized_crop"] is not None
        flip = train and cfg["random_flip"] and bool(torch.rand(1, generator=generator) < 0.5)
        box_fraction = None
        if cfg.get("random_crop") is not None:
            images = cls._fixed_size_crop(images, cfg["random_crop"], train, generator)
        elif crop:
            height, width = images[0].shape[1:]
            top, left, h, w = cls._crop_box(height, width, cfg["random_resized_crop"], generator)
            box_fraction = (top / height, left / width, h / height, w / width)
        finished = []
        for image in images:
            if box_fraction is not None:
                height, width = image.shape[1:]
                top, left = int(round(box_fraction[0] * height)), int(round(box_fraction[1] * width))
                h = max(1, min(height - top, int(round(box_fraction[2] * height))))
                w = max(1, min(width - left, int(round(box_fraction[3] * width))))
                image = image[:, top : top + h, left : left + w]
            size = cfg["image_size"]
            if size is not None and tuple(image.shape[1:]) != tuple(size):
                # 8-bit frames are resized as 8-bit (rounded to the nearest level, like PIL and torchvision do
                # for uint8 images): ~4x faster than in float32 on the CPU.
                mode = cfg["interpolation"]
                extra = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
                image = F.interpolate(image[None], size=tuple(size), mode=mode, **extra)[0]
                if mode == "bicubic" and image.is_floating_point():
                    image = image.clamp(0.0, 1.0)  # bicubic overshoots (uint8 saturates by itself)
            image = cls._unit_float(image)
            if flip:
                image = image.flip(-1)
                if cfg["flip_inverts_channels"]:
                    image = image.clone()
                    for channel in cfg["flip_inverts_channels"]:
                        image[channel] = 1.0 - image[channel]  # e.g. horizontal flow changes sign
            stats = _mean_std(cfg)
            if stats is not None:
                image = (image - stats[0][:, None, None]) / stats[1][:, None, None]
            finished.append(image.contiguous().float())
        return finished

    @staticmethod
    def _clip_frames(value: Any, cfg: Mapping[str, Any], where: str) -> list[Any]:
        """The frames of one clip as a list (not yet decoded)."""
        if isinstance(value, (str, os.PathLike)):
            if not os.path.isdir(value):
                raise ValueError(f"{where}: frame directory {os.fspath(value)} does not exist")
            names = sorted(n for n in os.listdir(value) if n.lower().endswith(_IMAGE_EXTENSIONS))
            return [os.path.join(value, n) for n in names]
        if _is_array(value) or _numeric_depth(value) is not None:
            array = _numeric_array(value, "a frame array (N, H, W[, C])", where=where)
            if array.ndim == 3 and cfg["channels"] != 1:
                raise ValueError(
                    f"{where}: a 3-D frame array is (N, H, W) and needs channels=1, got shape {array.shape}"
                )
            if array.ndim not in (3, 4):
                raise ValueError(
                    f"{where}: expected frames (N, H, W[, C]) or a list of frames, got shape {array.shape}"
                )
            return list(array)
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ValueError(f"{where}: expected a list of frames, a frame array or a directory, got {_describe(value)}")

    def _process_frames(
        self, sample: Any, cfg: Mapping[str, Any], train: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        where = f"modality {cfg['name']!r}"
        frames = self._clip_frames(sample, cfg, where)
        available, wanted = len(frames), cfg["num_frames"]
        if available < wanted:
            raise ValueError(f"{where}: the clip has {available} frame(s), fewer than num_frames={wanted}")
        if cfg.get("frame_sampling") == "contiguous_window":
            # DI-MML's UCF101 `sample_flow`: offset randint(0, len - clip_len) (upper bound excluded) in training,
            # len // 2 - clip_len // 2 at evaluation.
            if train and available > wanted:
                start = int(torch.randint(0, available - wanted, (1,), generator=generator))
            elif train:
                start = 0
            else:
                start = available // 2 - wanted // 2
            indices = list(range(start, start + wanted))
        elif train:
            # Fresh draw on every call: the RNG is never reseeded here (the reference froze it per item).
            indices = sorted(torch.randperm(available, generator=generator)[:wanted].tolist())
        else:
            indices = [int((i + 0.5) * available / wanted) for i in range(wanted)]
        images = [self._to_chw(frames[i], cfg, f"{where} frame {i}") for i in indices]
        return torch.stack(self._finish_images(images, cfg, train, generator))


class DIMMLTransform:
    """``datasets`` transform: a batch dict of columns -> processed modality tensors + ``labels``.

    Columns named like the processor's modalities are processed (the others are dropped); the
    label column becomes ``labels`` (int64). Picklable, so it works in DataLoader workers.
    """

    def __init__(self, processor: DIMMLProcessor, train: bool, label_column: str = "labels") -> None:
        self.processor = processor
        self.train = train
        self.label_column = label_column

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
        inputs = {name: batch[name] for name in self.processor.modality_names if name in batch}
        if not inputs:
            raise ValueError(
                f"none of the processor's modalities {self.processor.modality_names} is a column of the batch "
                f"(columns: {sorted(batch)})"
            )
        outputs: dict[str, Any] = dict(self.processor(train=self.train, is_batched=True, **inputs))
        if self.label_column in batch:
            outputs["labels"] = torch.as_tensor(np.asarray(batch[self.label_column]), dtype=torch.long)
        return outputs

    def __repr__(self) -> str:
        return f"DIMMLTransform(train={self.train}, modalities={self.processor.modality_names})"


# `save_pretrained` copies this file next to the config and writes `auto_map`, so the processor
# loads with trust_remote_code=True where hf_dimml is not installed.
DIMMLProcessor.register_for_auto_class("AutoFeatureExtractor")
