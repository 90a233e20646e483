"""multimodal_accuracy: accuracy and macro-F1 of a multimodal classifier, plus per-modality accuracy.

A local `evaluate` metric module of hf_dimml. Load it by path, never by name (no Hub access is
needed): ``hf_dimml.metrics.load_multimodal_metric()``, or
``evaluate.load("/path/to/hf_dimml/metrics/multimodal_accuracy")``.

This file is copied by `evaluate` into its modules cache and imported on its own: it must stay
self-contained (no import of hf_dimml) and keep one import per line (evaluate's import scanner
misreads ``import a, b``).
"""

from typing import Dict
from typing import Iterable
from typing import Mapping
from typing import Optional

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Accuracy and macro-averaged F1 of the fused predictions of a multimodal classifier, and, for
every modality whose own predictions are given (e.g. the prediction of that modality's private
head, or of the model fed that modality alone), the accuracy of those predictions (and their
macro-F1 for the ones named in `macro_f1_for`).

Macro-F1 averages the per-class F1 over the classes that occur in the references or the
predictions (or over `labels` when given); a class never predicted (or never true) has F1 0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): fused predicted labels.
    references (`list` of `int`): ground-truth labels.
    modality_predictions (`dict` of `str` -> `list` of `int`, *optional*): per-modality predicted
        labels, aligned with `references`; passed at `compute` time (it is not accumulated by
        `add_batch`: gather all of it and pass it to the final `compute` call).
    labels (`list` of `int`, *optional*): the classes macro-F1 averages over (default: the
        union of the classes in references and predictions).
    macro_f1_for (`list` of `str`, *optional*): keys of `modality_predictions` whose macro-F1
        is reported too.

Returns:
    accuracy (`float`): fraction of correct fused predictions.
    macro_f1 (`float`): unweighted mean of the per-class F1 of the fused predictions.
    accuracy_<modality> (`float`): accuracy of each modality's predictions.
    macro_f1_<modality> (`float`): macro-F1 of each modality named in `macro_f1_for`.

Examples:
    >>> metric = hf_dimml.metrics.load_multimodal_metric()
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0],
    ...                modality_predictions={"audio": [0, 1, 0], "image": [1, 1, 1]})
    {'accuracy': 0.666..., 'macro_f1': 0.666..., 'accuracy_audio': 1.0, 'accuracy_image': 0.333...}
"""

_CITATION = """
@software{hf_dimml,
  title = {hf_dimml: balanced multimodal learning in the Hugging Face ecosystem},
  year = {2025}
}
"""


def _as_label_array(values: Iterable, name: str) -> np.ndarray:
    array = np.asarray(list(values) if not isinstance(values, np.ndarray) else values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of integer labels, got shape {array.shape}.")
    return array.astype(np.int64)


def macro_f1_score(references: np.ndarray, predictions: np.ndarray, labels: Optional[Iterable] = None) -> float:
    """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN); 0 for a class with no TP."""
    classes = np.unique(np.concatenate([references, predictions])) if labels is None else np.asarray(list(labels))
    if len(classes) == 0:
        return 0.0
    scores = []
    for cls in classes:
        true_positive = np.sum((predictions == cls) & (references == cls))
        false_positive = np.sum((predictions == cls) & (references != cls))
        false_negative = np.sum((predictions != cls) & (references == cls))
        denominator = 2 * true_positive + false_positive + false_negative
        scores.append(2 * true_positive / denominator if denominator > 0 else 0.0)
    return float(np.mean(scores))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MultimodalAccuracy(evaluate.Metric):
    """Fused accuracy, macro-F1 and per-modality accuracy."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(
        self,
        predictions,
        references,
        modality_predictions: Optional[Mapping[str, Iterable]] = None,
        labels: Optional[Iterable] = None,
        macro_f1_for: Optional[Iterable[str]] = None,
    ) -> Dict[str, float]:
        predictions = _as_label_array(predictions, "predictions")
        references = _as_label_array(references, "references")
        if len(references) == 0:
            raise ValueError("multimodal_accuracy needs at least one prediction.")
        results = {
            "accuracy": float(np.mean(predictions == references)),
            "macro_f1": macro_f1_score(references, predictions, labels),
        }
        for modality, values in (modality_predictions or {}).items():
            values = _as_label_array(values, f"modality_predictions[{modality!r}]")
            if len(values) != len(references):
                raise ValueError(
                    f"modality_predictions[{modality!r}] has {len(values)} predictions for {len(references)} references."
                )
            results[f"accuracy_{modality}"] = float(np.mean(values == references))
        for modality in macro_f1_for or ():
            if modality not in (modality_predictions or {}):
                raise ValueError(f"macro_f1_for names {modality!r}, which modality_predictions does not hold.")
            values = _as_label_array(modality_predictions[modality], f"modality_predictions[{modality!r}]")
            results[f"macro_f1_{modality}"] = macro_f1_score(references, values, labels)
        return results
