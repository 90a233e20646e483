"""Batch collation for multimodal classification.

:class:`MultimodalDataCollator` turns a list of examples, each a dict of already fixed-size
per-modality arrays / tensors (as produced by the processor) plus an integer ``labels``, into a
batch dict: one float32 tensor of shape (B, ...) per modality and a long ``labels`` tensor.
It can be passed to :class:`transformers.Trainer` as ``data_collator``.

Rules:

* a modality absent (missing key or ``None``) from *every* example is left out of the batch;
* a modality present in some examples and ``None`` / missing in others raises ``ValueError``
  (mixed presence within a batch is not supported: pad or drop such examples beforehand);
* examples whose arrays for one modality differ in shape raise ``ValueError`` naming the
  modality and the shapes;
* ``labels`` follows the same presence rule and is returned as ``torch.long`` (it may be absent
  from all examples, for inference).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Number
from typing import Any, Mapping, Sequence

import numpy as np
import torch

__all__ = ["MultimodalDataCollator"]

LABELS_KEY = "labels"


def _is_scalar(value: Any) -> bool:
    """True for values that cannot be a modality input: numbers, strings, 0-d arrays / tensors."""
    if isinstance(value, (Number, str, bytes, np.generic)):
        return True
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.ndim == 0
    return False


def _to_float_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(dtype=torch.float32)
    return torch.as_tensor(np.asarray(value, dtype=np.float32))


@dataclass
class MultimodalDataCollator:
    """Stack per-modality inputs of a list of examples into batch tensors.

    Args:
        modalities: the example keys to collate as modality inputs. ``None`` collates every key
            except ``labels`` whose values are arrays / tensors / nested lists (scalar keys such as
            ``audio_id`` are dropped). Keys not collated are not returned.
    """

    modalities: Sequence[str] | None = None

    def _modality_names(self, examples: Sequence[Mapping[str, Any]]) -> list[str]:
        if self.modalities is not None:
            return list(self.modalities)
        names: list[str] = []
        for example in examples:
            for key, value in example.items():
                if key == LABELS_KEY or key in names or value is None or _is_scalar(value):
                    continue
                names.append(key)
        return names

    @staticmethod
    def _present(examples: Sequence[Mapping[str, Any]], key: str) -> list[bool]:
        return [example.get(key) is not None for example in examples]

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("MultimodalDataCollator received an empty batch.")
        batch: dict[str, torch.Tensor] = {}
        for modality in self._modality_names(examples):
            present = self._present(examples, modality)
            if not any(present):
                continue
            if not all(present):
                missing = [i for i, is_present in enumerate(present) if not is_present]
                raise ValueError(
                    f"modality {modality!r} is None or missing in examples {missing} of a batch of {len(examples)} "
                    "but present in the others; mixed modality presence within a batch is not supported."
                )
            tensors = [_to_float_tensor(example[modality]) for example in examples]
            shapes = sorted({tuple(t.shape) for t in tensors})
            if len(shapes) > 1:
                raise ValueError(
                    f"modality {modality!r} has examples of different shapes in one batch: {shapes}; "
                    "the collator expects fixed-size inputs (run the processor first)."
                )
            batch[modality] = torch.stack(tensors)

        label_present = self._present(examples, LABELS_KEY)
        if all(label_present):
            labels = [example[LABELS_KEY] for example in examples]
            labels = [int(label.item()) if hasattr(label, "item") else int(label) for label in labels]
            batch[LABELS_KEY] = torch.tensor(labels, dtype=torch.long)
        elif any(label_present):
            raise ValueError("'labels' is present in some examples of the batch and missing in others.")
        return batch
