"""Dataset builders: community layouts on local disk -> cached ``datasets.DatasetDict``.

One module per dataset (``cremad``, ``ave``, ``kinetics_sounds``, ``ucf101``, ``modelnet40``) over the shared cache
engine (:mod:`hf_dimml.data.builders.engine`: recipe, storage, atomic caching, skips; its docs describe what is
stored), plus :mod:`~hf_dimml.data.builders.user` for any user dataset. Each ``build_<name>(root, cache_dir=None,
recipe=None, ...)`` documents the folder layout it reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import datasets

from hf_dimml.data.builders.ave import build_ave
from hf_dimml.data.builders.cremad import build_cremad
from hf_dimml.data.builders.engine import (
    AUDIO_DIMML_SCIPY,
    BUILDER_VERSION,
    DEFAULT_MODALITIES,
    dataset_recipe,
    processor_from_dataset,
    stratified_holdout,
)
from hf_dimml.data.builders.kinetics_sounds import build_kinetics_sounds
from hf_dimml.data.builders.modelnet40 import build_modelnet40
from hf_dimml.data.builders.ucf101 import build_ucf101
from hf_dimml.data.builders.user import load_user_dataset
from hf_dimml.data.lists import CREMAD_LABELS

__all__ = [
    "AUDIO_DIMML_SCIPY",
    "BUILDER_VERSION",
    "CREMAD_LABELS",
    "DATASET_BUILDERS",
    "DEFAULT_MODALITIES",
    "build_ave",
    "build_cremad",
    "build_dataset",
    "build_kinetics_sounds",
    "build_modelnet40",
    "build_ucf101",
    "dataset_recipe",
    "load_user_dataset",
    "processor_from_dataset",
    "stratified_holdout",
]

#: Builder by dataset name (the names of ``DEFAULT_MODALITIES``).
DATASET_BUILDERS: dict[str, Callable[..., datasets.DatasetDict]] = {
    "cremad": build_cremad,
    "ave": build_ave,
    "kinetics_sounds": build_kinetics_sounds,
    "ucf101": build_ucf101,
    "modelnet40": build_modelnet40,
}


def build_dataset(name: str, root: str | os.PathLike, **kwargs: Any) -> datasets.DatasetDict:
    """Dispatch to ``build_<name>`` (``name`` in ``DATASET_BUILDERS``)."""
    if name not in DATASET_BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(DATASET_BUILDERS)}")
    return DATASET_BUILDERS[name](root, **kwargs)
