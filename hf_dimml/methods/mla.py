"""MLA (Multimodal Representation Learning by Alternating Unimodal Adaptation, CVPR 2024), docs/design.md §3.

Each batch, for each modality in turn: the shared head on that modality's feature alone, CE, backward, the head's
weight gradient projected away from the previous modality's mean feature (orthogonal weight modification), one
optimiser step. The released code never applies the projection and divides by a matrix; this is the formula.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..losses import mla_project_head_gradient, mla_update_projector
from .base import TrainingMethod

__all__ = ["MLA", "MLAArguments"]


@dataclass
class MLAArguments:
    mla_alpha_start: float = field(default=0.1, metadata={
        "help": "MLA: regulariser alpha of the head-gradient projection at the start (decays linearly)."})
    mla_alpha_end: float = field(default=0.01, metadata={"help": "MLA: alpha at the end of training."})

    def __post_init__(self) -> None:
        if not (self.mla_alpha_start > 0 and self.mla_alpha_end > 0):
            raise ValueError(f"mla_alpha_start and mla_alpha_end must be > 0, got {self.mla_alpha_start}, "
                             f"{self.mla_alpha_end}")
        super().__post_init__()


class MLA(TrainingMethod):
    name = "mla"
    head_layout = "shared_head"
    arguments = MLAArguments
    display = "MLA"
    venue = "Multimodal Representation Learning by Alternating Unimodal Adaptation, CVPR 2024"
    description = (
        "MLA replaces joint training with alternating unimodal steps: for every batch, each modality in turn updates "
        "its own encoder and one head shared by all modalities. The head's weight gradient is projected (orthogonal "
        "weight modification) so that a modality's step does not erase what the head learned from the others. A "
        "prediction fuses the shared head's per-modality logits with per-sample weights that favour the modality with "
        "the lowest entropy."
    )
    citation = """@inproceedings{zhang2024mla,
  title     = {Multimodal Representation Learning by Alternating Unimodal Adaptation},
  author    = {Zhang, Xiaohui and Yoon, Jaehong and Bansal, Mohit and Yao, Huaxiu},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {27456--27466},
  year      = {2024},
  eprint    = {2311.10707},
  archivePrefix = {arXiv}
}"""

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        hidden_size = self.model.config.hidden_size
        self.projector = torch.eye(hidden_size)  # P_0 = I
        self.previous_mean = torch.zeros(hidden_size)  # zero: the first update leaves P = I (no sync to test it)

    def check(self) -> None:
        super().check()
        if self.args.gradient_accumulation_steps != 1:
            raise ValueError("MLA takes one optimiser step per modality and batch: gradient_accumulation_steps "
                             "must be 1")

    def training_step(self, model, modality_inputs, labels) -> torch.Tensor:
        """One optimiser step per modality, in turn, on that modality's encoder and the shared head.

        Before each step after the very first, the projector absorbs the previous step's mean feature and the head's
        weight gradient is projected with it. The Trainer's own optimiser step that follows finds no gradients.
        """
        trainer, unwrapped = self.trainer, self.model
        model.train()
        if self.projector.device != labels.device:
            self.projector, self.previous_mean = self.projector.to(labels.device), self.previous_mean.to(labels.device)
        progress = trainer.state.global_step / max(1, trainer.state.max_steps)
        alpha = self.args.mla_alpha_start + (self.args.mla_alpha_end - self.args.mla_alpha_start) * progress
        total = torch.zeros((), device=labels.device)
        for name in self.modality_names:
            with trainer.compute_loss_context_manager():
                outputs = model(**{name: modality_inputs[name]})
            loss = nn.functional.cross_entropy(outputs.modality_logits[name].float(), labels)
            trainer.accelerator.backward(loss)
            head = unwrapped.shared_classifier.weight
            mla_update_projector(self.projector, self.previous_mean, alpha)
            if head.grad is not None:
                head.grad.copy_(mla_project_head_gradient(head.grad, self.projector))
            if self.args.max_grad_norm:
                trainer.accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            mean_feature = outputs.features[name].detach().float().mean(dim=0)
            self.previous_mean.copy_(trainer.accelerator.reduce(mean_feature, "mean"))
            total = total + loss.detach()
            trainer.accumulate_train_stats({f"loss_{name}": loss.detach()}, outputs, labels)
        return total

    def train_heads(self, outputs) -> dict[str, torch.Tensor]:
        # Each step sees one modality: no fused prediction in training.
        return {f"accuracy_{n}": z for n, z in outputs.modality_logits.items()}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"projector": self.projector, "previous_mean": self.previous_mean}

    def load_state_tensors(self, tensors) -> None:
        self.projector, self.previous_mean = tensors["projector"].float(), tensors["previous_mean"].float()
