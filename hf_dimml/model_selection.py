"""Per-modality model selection for detached methods (README.md, "Model selection for the detached methods").

DI-MML and the unimodal baseline train each encoder on its own objective, so each encoder can be selected on its own
validation score: the epoch at which one modality's encoder is best is rarely the one at which another's is. Selecting
one epoch by the fused score throws away the weak modality's progress. `ModalitySelection` keeps, per modality, the
weights of its encoder and private head from the evaluation where that head's own validation metric was best, and
assembles the model from them.

The kept weights travel with every checkpoint (`modality_selection.safetensors`: the weights, and the epochs and
scores as safetensors metadata), so a resumed run keeps the bests it had.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["MODALITY_SELECTION_FILE", "SELECTION_METRICS", "ModalitySelection"]

MODALITY_SELECTION_FILE = "modality_selection.safetensors"
# Per-modality validation metric -> whether greater is better. The trainer logs `eval_{metric}_{modality}`.
SELECTION_METRICS = {"accuracy": True, "macro_f1": True, "loss": False}


class ModalitySelection:
    """Each modality's best evaluation so far, by `metric`, and a CPU copy of its weights at that evaluation.

    Args:
        modality_names: the modalities, in config order.
        metric: `accuracy`, `macro_f1` or `loss` of the modality's own head on the validation split.
    """

    def __init__(self, modality_names: list[str], metric: str = "accuracy") -> None:
        if metric not in SELECTION_METRICS:
            raise ValueError(f"modality selection metric must be one of {sorted(SELECTION_METRICS)}, got {metric!r}")
        self.modality_names = list(modality_names)
        self.metric = metric
        self.greater_is_better = SELECTION_METRICS[metric]
        self.best: dict[str, dict[str, Any]] = {}  # name -> {"epoch", "step", "value"}
        self.weights: dict[str, dict[str, torch.Tensor]] = {}  # name -> state dict of its modules (CPU)

    def metric_key(self, name: str, prefix: str = "eval") -> str:
        return f"{prefix}_{self.metric}_{name}"

    def _improves(self, name: str, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if name not in self.best:
            return True
        best = self.best[name]["value"]
        # Ties keep the earlier evaluation (as the Trainer's own best-model rule does).
        return value > best if self.greater_is_better else value < best

    @torch.no_grad()
    def update(
        self, metrics: Mapping[str, float], epoch: float, step: int, modules: Mapping[str, nn.Module]
    ) -> list[str]:
        """Records the modalities whose metric improved and copies their modules' weights; returns their names."""
        improved = []
        for name in self.modality_names:
            key = self.metric_key(name)
            if key not in metrics:
                raise KeyError(
                    f"per-modality model selection reads {key!r}, which the evaluation did not return; available: "
                    f"{sorted(metrics)}"
                )
            value = float(metrics[key])
            if self._improves(name, value):
                self.best[name] = {"epoch": float(epoch), "step": int(step), "value": value}
                self.weights[name] = {
                    key: tensor.detach().to("cpu", copy=True).contiguous()
                    for key, tensor in modules[name].state_dict().items()
                }
                improved.append(name)
        return improved

    @torch.no_grad()
    def assemble(self, modules: Mapping[str, nn.Module]) -> None:
        """Loads each modality's kept weights into its modules (a modality never evaluated keeps its current ones)."""
        for name, state in self.weights.items():
            modules[name].load_state_dict(state, strict=True)

    def summary(self) -> dict[str, Any]:
        """Per modality: the epoch and step its weights come from, and the validation score there."""
        return {
            name: {"epoch": self.best[name]["epoch"], "step": self.best[name]["step"],
                   f"validation_{self.metric}": self.best[name]["value"]}
            for name in self.modality_names if name in self.best
        }

    # --- persistence -------------------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike) -> None:
        """Writes `modality_selection.safetensors` into `folder` (through a temporary file, then a rename)."""
        if not self.best:
            return
        tensors = {f"{name}/{key}": tensor for name, state in self.weights.items() for key, tensor in state.items()}
        metadata = {"metric": self.metric, "best": json.dumps(self.best)}
        path = Path(folder) / MODALITY_SELECTION_FILE
        temporary = path.with_name(path.name + ".tmp")
        save_file(tensors, str(temporary), metadata=metadata)
        os.replace(temporary, path)

    def load(self, folder: str | os.PathLike) -> bool:
        """Restores the bests saved in `folder`; False when the folder holds none (e.g. a checkpoint of a run with
        another selection rule)."""
        path = Path(folder) / MODALITY_SELECTION_FILE
        if not path.is_file():
            return False
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("metric") != self.metric:
            raise ValueError(
                f"{path} was selected by {metadata.get('metric')!r}, this run selects by {self.metric!r}: resume with "
                f"the same modality_selection_metric"
            )
        best = json.loads(metadata["best"])
        unknown = sorted(set(best) - set(self.modality_names))
        if unknown:
            raise ValueError(f"{path} holds modalities {unknown} that this model does not have ({self.modality_names})")
        tensors = load_file(str(path))
        self.best = best
        self.weights = {name: {} for name in best}
        for key, tensor in tensors.items():
            name, _, parameter = key.partition("/")
            self.weights[name][parameter] = tensor
        return True
