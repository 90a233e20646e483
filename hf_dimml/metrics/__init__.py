"""Evaluation metrics of hf_dimml, shipped as local `evaluate` modules and loaded by path (no Hub)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .shapley import modality_shapley_values

__all__ = ["MULTIMODAL_ACCURACY_PATH", "load_multimodal_metric", "modality_shapley_values"]

#: Directory of the ``multimodal_accuracy`` evaluate module (holds ``multimodal_accuracy.py``).
MULTIMODAL_ACCURACY_PATH: Path = Path(__file__).resolve().parent / "multimodal_accuracy"


def load_multimodal_metric(**load_kwargs: Any):
    """Load the ``multimodal_accuracy`` metric from its local path with :func:`evaluate.load`.

    Works offline (``HF_HUB_OFFLINE=1``): the module is read from this package, never fetched.
    ``load_kwargs`` are passed on to :func:`evaluate.load` (e.g. ``experiment_id``,
    ``num_process`` / ``process_id`` for distributed evaluation).

    ``metric.compute(predictions=..., references=..., modality_predictions={"audio": [...], ...})``
    returns ``accuracy``, ``macro_f1`` and ``accuracy_<modality>`` for each given modality.
    """
    import evaluate

    return evaluate.load(str(MULTIMODAL_ACCURACY_PATH), **load_kwargs)
