"""Dataset builders and the batch collator of hf_dimml."""

from .av_digits import AV_DIGITS_CLASS_NAMES, AV_DIGITS_DEFAULTS, build_av_digits, load_av_digits
from .collator import MultimodalDataCollator
from .builders import (
    DATASET_BUILDERS,
    DEFAULT_MODALITIES,
    build_ave,
    build_cremad,
    build_dataset,
    build_kinetics_sounds,
    build_modelnet40,
    build_ucf101,
    dataset_recipe,
    load_user_dataset,
    processor_from_dataset,
    stratified_holdout,
)

__all__ = [
    "AV_DIGITS_CLASS_NAMES",
    "AV_DIGITS_DEFAULTS",
    "DATASET_BUILDERS",
    "DEFAULT_MODALITIES",
    "MultimodalDataCollator",
    "build_av_digits",
    "build_ave",
    "build_cremad",
    "build_dataset",
    "build_kinetics_sounds",
    "build_modelnet40",
    "build_ucf101",
    "dataset_recipe",
    "load_av_digits",
    "load_user_dataset",
    "processor_from_dataset",
    "stratified_holdout",
]
