"""DMRNet (Robust Multimodal Learning via Representation Decoupling, ECCV 2024), docs/design.md §4.

Modality dropout (each sample draws a non-empty subset of modalities, absent features zeroed), a Gaussian embedding of
the concatenated features, CE + KL + a hard-combination CE: after a warm-up, the modality combination with the largest
mean variance is "hard" and its samples get an extra CE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..losses import dmrnet_loss, draw_modality_subsets
from .base import TrainingMethod

__all__ = ["DMRNet", "DMRNetArguments"]


@dataclass
class DMRNetArguments:
    dmrnet_kl_weight: float = field(default=1e-3, metadata={"help": "DMRNet: weight alpha of the KL term."})
    dmrnet_hcr_weight: float = field(default=0.25, metadata={
        "help": "DMRNet: weight beta of the hard-combination CE (reference 0.2-0.3)."})
    dmrnet_warmup_epochs: int = field(default=6, metadata={
        "help": "DMRNet: epochs during which each combination's variance is tracked before the hard one is fixed."})

    def __post_init__(self) -> None:
        if self.dmrnet_kl_weight < 0 or self.dmrnet_hcr_weight < 0 or self.dmrnet_warmup_epochs < 0:
            raise ValueError("dmrnet_kl_weight, dmrnet_hcr_weight and dmrnet_warmup_epochs must be >= 0")
        super().__post_init__()


class DMRNet(TrainingMethod):
    name = "dmrnet"
    head_layout = "gaussian_embedding"
    arguments = DMRNetArguments
    display = "DMRNet"
    venue = "Robust Multimodal Learning via Representation Decoupling, ECCV 2024"
    description = (
        "DMRNet trains with modality dropout (each sample keeps a random non-empty subset of its modalities) and maps "
        "the concatenated features to a Gaussian embedding: training samples from it (reparameterisation), inference "
        "uses its mean. A KL term regularises the distribution and a hard-combination regulariser adds weight to the "
        "modality combination with the largest variance, which keeps every combination of modalities usable at test "
        "time."
    )
    citation = """@inproceedings{wei2024dmrnet,
  title     = {Robust Multimodal Learning via Representation Decoupling},
  author    = {Wei, Shicai and Luo, Yang and Wang, Yuji and Luo, Chunbo},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2024},
  eprint    = {2407.04458},
  archivePrefix = {arXiv}
}"""

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        num_combinations = 2 ** len(self.modality_names) - 1
        self.variance_sum = torch.zeros(num_combinations, dtype=torch.float64)
        self.variance_count = torch.zeros(num_combinations, dtype=torch.float64)
        self.hard_combination = -1  # fixed after the warm-up

    @staticmethod
    def combination_index(present: torch.Tensor) -> torch.Tensor:
        """Index 0 .. 2^M - 2 of each sample's modality combination, from a boolean `(batch, M)` presence mask."""
        weights = 2 ** torch.arange(present.shape[1], device=present.device)
        return (present.long() * weights).sum(dim=1) - 1

    def begin_epoch(self, epoch: int) -> None:
        if epoch >= self.args.dmrnet_warmup_epochs and self.hard_combination < 0:
            # The statistics are already summed over processes at every step (compute_loss).
            mean_variance = self.variance_sum / self.variance_count.clamp_min(1)
            mean_variance[self.variance_count == 0] = -1.0
            self.hard_combination = int(mean_variance.argmax())

    def compute_loss(self, model, modality_inputs, labels):
        present = draw_modality_subsets(labels.shape[0], len(self.modality_names), device=labels.device)
        outputs = model(**modality_inputs, modality_mask=present)
        combination = self.combination_index(present)
        loss, components = dmrnet_loss(
            outputs.logits, outputs.latent_mean, outputs.latent_logvar, labels, combination, self.hard_combination,
            kl_weight=self.args.dmrnet_kl_weight, hcr_weight=self.args.dmrnet_hcr_weight,
        )
        if self.hard_combination < 0:  # warm-up: mean variance of each combination, summed over processes
            variance = outputs.latent_logvar.detach().float().exp().mean(dim=1).double()
            sums = torch.zeros(2, self.variance_sum.shape[0], dtype=torch.float64, device=labels.device)
            sums[0].index_add_(0, combination, variance)
            sums[1].index_add_(0, combination, torch.ones_like(variance))
            sums = self.trainer.accelerator.reduce(sums, "sum")
            if self.variance_sum.device != labels.device:
                self.variance_sum, self.variance_count = self.variance_sum.to(labels.device), self.variance_count.to(
                    labels.device)
            self.variance_sum += sums[0]
            self.variance_count += sums[1]
        return loss, components, outputs

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"variance_sum": self.variance_sum, "variance_count": self.variance_count,
                "hard_combination": torch.tensor(self.hard_combination)}

    def load_state_tensors(self, tensors) -> None:
        self.variance_sum, self.variance_count = tensors["variance_sum"], tensors["variance_count"]
        self.hard_combination = int(tensors["hard_combination"])
