"""The baselines every balancing method is measured against: `joint` (one CE on the fused head) and `unimodal`
(each encoder with its own head, alone; at inference the ensemble of the heads)."""

from __future__ import annotations

from torch import nn

from .base import TrainingMethod

__all__ = ["Joint", "Unimodal"]


class Joint(TrainingMethod):
    name = "joint"
    head_layout = "fused"
    display = "joint training (baseline)"
    venue = "concatenation-fusion baseline"
    description = (
        "Baseline: the encoders' features are concatenated and classified by one linear layer, all trained together "
        "with a single cross-entropy loss."
    )

    def compute_loss(self, model, modality_inputs, labels):
        outputs = model(**modality_inputs)
        loss = nn.functional.cross_entropy(outputs.logits.float(), labels)
        return loss, {"loss_fusion": loss.detach()}, outputs


class Unimodal(TrainingMethod):
    name = "unimodal"
    head_layout = "unimodal_ensemble"
    detached = True
    display = "unimodal training (baseline)"
    venue = "unimodal-ensemble baseline"
    description = (
        "Baseline: one encoder and head per modality, each trained alone; the multimodal prediction ensembles the "
        "unimodal heads."
    )

    def compute_loss(self, model, modality_inputs, labels):
        outputs = model(**modality_inputs)
        losses = {n: nn.functional.cross_entropy(z.float(), labels) for n, z in outputs.modality_logits.items()}
        components = {f"loss_{n}": value.detach() for n, value in losses.items()}
        return sum(losses.values()), components, outputs
