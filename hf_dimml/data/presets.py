"""Dataset presets: how each supported dataset is processed and which model inputs it gives.

A preset ties together the three ends of the data flow for one dataset: the processor's modality configs (raw column
→ tensor), the model's modality entries (kind, shape, default encoder) and the DI-MML temperatures the papers use for
it. `training_scripts/train.py --dataset NAME` and the benchmarks read them; users with their own data write the same
two lists in a config file instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DatasetPreset", "PRESETS", "get_preset"]


@dataclass(frozen=True)
class DatasetPreset:
    """Processor and model modality configs of one dataset, plus its reference DI-MML temperatures."""

    name: str
    processor_modalities: list[dict[str, Any]]
    model_modalities: list[dict[str, Any]]
    duc_temperature: float
    logit_temperature: float
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_AV_DIGITS = DatasetPreset(
    name="av_digits",
    processor_modalities=[
        # Already z-scored per coefficient by the builder; variable-length MFCCs resampled to 20 frames.
        {"name": "audio", "kind": "spectrogram", "num_frames": 20, "n_bins": 13, "time_resize": "interpolate"},
        {"name": "image", "kind": "image", "channels": 1, "image_size": [8, 8], "value_range": [0.0, 1.0]},
    ],
    model_modalities=[
        {"name": "audio", "kind": "spectrogram", "encoder": "mlp", "input_shape": [1, 13, 20],
         "encoder_kwargs": {"hidden_sizes": [256]}},
        {"name": "image", "kind": "image", "encoder": "mlp", "input_shape": [1, 8, 8],
         "encoder_kwargs": {"hidden_sizes": [256]}},
    ],
    duc_temperature=10.0,
    logit_temperature=1.0,
    description="Embedded audio-visual digits (FSDD MFCCs x scikit-learn 8x8 digits), see docs/av_digits.md",
)

PRESETS: dict[str, DatasetPreset] = {_AV_DIGITS.name: _AV_DIGITS}


def get_preset(name: str) -> DatasetPreset:
    """The preset called `name`; a ValueError lists the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown dataset preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]
