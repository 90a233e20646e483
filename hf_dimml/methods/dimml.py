"""DI-MML (Detached and Interactive Multimodal Learning, ACM MM 2024), docs/design.md §2.

Stage 1 trains each encoder on its own losses: its private head's CE, the CE of ONE shared classifier fed that
modality's feature alone, and, from `duc_start_epoch` on, the dimension-decoupled unidirectional contrastive loss (DUC)
on the dimensions effective for a teacher modality and not for the student. No term mixes two encoders' features.
Stage 2 freezes the encoders and trains the fusion head on their concatenated features.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn

from ..losses import dimml_stage1_loss, select_effective_dimensions
from .base import TrainingMethod

__all__ = ["DIMML", "DIMMLArguments"]


@dataclass
class DIMMLArguments:
    """DI-MML's knobs (reference: w = 1, lambda = 1, DUC from epoch 20 of 150)."""

    shared_weight: float = field(default=1.0, metadata={"help": "DI-MML: weight w of the shared-classifier CE."})
    duc_weight: float = field(default=1.0, metadata={"help": "DI-MML: weight lambda of the DUC loss."})
    duc_temperature: float | None = field(default=None, metadata={
        "help": "DI-MML: DUC temperature tau on unnormalised features. Unset: the dataset preset's (the reference's "
                "per dataset: CREMA-D 50, AVE 10, UCF101 10, ModelNet40 50), 50 without a preset."})
    duc_start_epoch: int = field(default=20, metadata={
        "help": "DI-MML: epoch at which the effective dimensions are selected and DUC switches on."})

    def __post_init__(self) -> None:
        for name in ("shared_weight", "duc_weight"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.duc_temperature is not None and not self.duc_temperature > 0:
            raise ValueError(f"duc_temperature must be > 0, got {self.duc_temperature}")
        if self.duc_start_epoch < 0:
            raise ValueError(f"duc_start_epoch must be >= 0, got {self.duc_start_epoch}")
        super().__post_init__()


DEFAULT_DUC_TEMPERATURE = 50.0


class DIMML(TrainingMethod):
    name = "dimml"
    head_layout = "certainty_weighted"
    arguments = DIMMLArguments
    num_stages = 2
    detached = True
    display = "DI-MML"
    venue = "Detached and Interactive Multimodal Learning, ACM MM 2024"
    description = (
        "DI-MML trains each modality's encoder with its own, detached objective: a private head, one classifier shared "
        "by all modalities (fed one modality at a time, which aligns the meaning of feature dimensions across "
        "modalities) and, from `duc_start_epoch` on, the dimension-decoupled unidirectional contrastive (DUC) loss that "
        "transfers knowledge on the dimensions one modality has learned and another has not. No loss term mixes two "
        "encoders' features, so no modality dominates another's gradient. A fusion head is then trained on the frozen "
        "features (stage 2), and a prediction combines the heads available for the sample with certainty-aware logit "
        "weighting."
    )
    citation = """@inproceedings{fan2024dimml,
  title     = {Detached and Interactive Multimodal Learning},
  author    = {Fan, Yunfeng and Xu, Wenchao and Wang, Haozhao and Liu, Junhong and Guo, Song},
  booktitle = {Proceedings of the 32nd ACM International Conference on Multimedia (MM '24)},
  year      = {2024},
  eprint    = {2407.19514},
  archivePrefix = {arXiv}
}"""

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        config = self.model.config
        # Effective dimensions per modality (M x d), selected once when DUC starts; kept for resumes.
        self.duc_mask = torch.zeros(len(config.modalities), config.hidden_size, dtype=torch.bool)
        self.duc_mask_ready = False

    @classmethod
    def hyperparameters(cls, args, config) -> dict:
        values = super().hyperparameters(args, config)
        values["duc_temperature"] = cls.duc_temperature(args)
        values["logit_temperature"] = config.logit_temperature
        return values

    @staticmethod
    def duc_temperature(args) -> float:
        return args.duc_temperature if args.duc_temperature is not None else DEFAULT_DUC_TEMPERATURE

    def check(self) -> None:
        if self.args.stage2_epochs < 0:
            raise ValueError("stage2_epochs must be >= 0")

    # --- epochs ------------------------------------------------------------------------------------------------

    def begin_epoch(self, epoch: int) -> None:
        """The stage follows from the epoch. Stage 2 starts from the selected stage-1 encoders; DUC's effective
        dimensions are selected once, at `duc_start_epoch`."""
        model = self.model
        self.stage = 1 if epoch < self.args.stage1_epochs else 2
        if self.stage == 2 and not bool(model.fusion_head_trained):
            # Each modality's own best (per-modality selection), or, as in the reference, the best stage-1
            # checkpoint (fused). A resumed stage 2 finds the flag set: its checkpoint already holds those encoders.
            trainer = self.trainer
            best = trainer.state.best_model_checkpoint
            if trainer.modality_selection is not None:
                trainer.assemble_selected_modalities()
            elif self.args.load_best_model_at_end and best is not None:
                trainer.accelerator.wait_for_everyone()  # the main process may still be writing it
                trainer._load_from_checkpoint(best, model=model)
            model.fusion_head_trained.fill_(True)
        elif epoch >= self.args.duc_start_epoch and self.args.duc_weight > 0 and not self.duc_mask_ready:
            self.duc_mask = self.select_effective_dimensions()
            self.duc_mask_ready = True

    @torch.no_grad()
    def select_effective_dimensions(self) -> torch.Tensor:
        """Boolean `(M, d)`: per modality, the dimensions above the mean nearest-class-mean accuracy.

        Features are eval-mode features of the whole training set, gathered from all processes (sequential
        dataloader, duplicates of the last uneven batch dropped by `gather_for_metrics`), so every process selects
        the same dimensions.
        """
        trainer, model = self.trainer, self.model
        was_training = model.training
        model.eval()
        features: dict[str, list[torch.Tensor]] = defaultdict(list)
        labels: list[torch.Tensor] = []
        for batch in trainer.get_eval_dataloader(trainer.train_dataset):
            modality_inputs, batch_labels = trainer.split_inputs(batch)
            batch_features = model(**modality_inputs).features  # the prepared forward runs under autocast
            for name in self.modality_names:
                features[name].append(trainer.accelerator.gather_for_metrics(batch_features[name].float()).cpu())
            labels.append(trainer.accelerator.gather_for_metrics(batch_labels).cpu())
        model.train(was_training)
        all_labels = torch.cat(labels)
        return torch.stack([
            select_effective_dimensions(torch.cat(features[name]), all_labels, model.config.num_labels)
            for name in self.modality_names
        ])

    # --- loss --------------------------------------------------------------------------------------------------

    def compute_loss(self, model, modality_inputs, labels):
        if self.stage == 1:
            outputs = model(**modality_inputs, training_stage=1)
            mask = None
            if self.duc_mask_ready:
                if self.duc_mask.device != labels.device:
                    self.duc_mask = self.duc_mask.to(labels.device)
                mask = self.duc_mask
            loss, components = dimml_stage1_loss(
                outputs.modality_logits, outputs.shared_logits, outputs.features, labels,
                shared_weight=self.args.shared_weight, duc_weight=self.args.duc_weight,
                duc_temperature=self.duc_temperature(self.args), effective_mask=mask,
            )
            return loss, components, outputs
        self.model.dimml.eval()  # frozen encoders: BatchNorm statistics must not move either
        outputs = model(**modality_inputs, training_stage=2)
        loss = nn.functional.cross_entropy(outputs.fusion_logits.float(), labels)
        return loss, {"loss_fusion": loss.detach()}, outputs

    def train_heads(self, outputs) -> dict[str, torch.Tensor]:
        heads = super().train_heads(outputs)
        if self.stage == 2:
            heads["accuracy_fusion"] = outputs.fusion_logits
        return heads

    # --- evaluation --------------------------------------------------------------------------------------------

    def eval_head_names(self) -> list[str]:
        # The fusion head is neither weighted in nor reported before stage 2 has trained it (also when the final
        # checkpoint is a stage-1 one): its accuracy would be noise.
        names = [f"shared_{n}" for n in self.modality_names]
        return names + (["fusion"] if bool(self.model.fusion_head_trained) else [])

    def eval_heads(self, outputs, names: list[str]) -> list[torch.Tensor]:
        heads = [outputs.shared_logits[n] for n in self.modality_names]
        return heads + ([outputs.fusion_logits] if "fusion" in names else [])

    # --- state -------------------------------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"duc_mask": self.duc_mask, "duc_mask_ready": torch.tensor(self.duc_mask_ready)}

    def load_state_tensors(self, tensors) -> None:
        self.duc_mask = tensors["duc_mask"].bool()
        self.duc_mask_ready = bool(tensors["duc_mask_ready"])
