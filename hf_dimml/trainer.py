"""`DIMMLTrainer`: DI-MML's two training stages on top of `transformers.Trainer` (and so Accelerate).

One `train()` call runs both stages, so a single `resume_from_checkpoint` covers them: the stage follows from the
epoch, and the DI-MML state that must survive (effective dimensions, whether the fusion head is trained) lives in
persistent model buffers saved with the weights.

What is local and what is gathered under data parallelism:
- stage-1 losses and DUC use the local batch (DUC's negatives are the other samples of the process's batch);
  DDP averages the gradients;
- the effective-dimension statistics are computed from the features of the WHOLE training set, gathered from all
  processes, so every process selects the same dimensions;
- logged loss components and accuracies are summed over processes before they are divided.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import EvalPrediction, Trainer, TrainerCallback, TrainingArguments
from transformers.optimization import get_scheduler

from .checkpointing import AtomicCheckpointMixin
from .losses import (
    dimml_stage1_loss,
    dmrnet_loss,
    draw_modality_subsets,
    mla_project_head_gradient,
    mla_update_projector,
    select_effective_dimensions,
)
from .metrics import load_multimodal_metric
from .model_selection import SELECTION_METRICS, ModalitySelection

__all__ = ["DIMMLTrainingArguments", "DIMMLTrainer", "modality_subsets"]

logger = logging.getLogger(__name__)


@dataclass
class DIMMLTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus DI-MML's two stages. `num_train_epochs` is derived: `stage1_epochs + stage2_epochs`."""

    stage1_epochs: int = field(default=30, metadata={"help": "Epochs of stage 1 (encoders, private/shared heads, DUC)."})
    stage2_epochs: int = field(default=10, metadata={"help": "Epochs of stage 2 (frozen encoders, fusion head)."})
    stage2_learning_rate: float | None = field(
        default=None, metadata={"help": "Constant learning rate of stage 2 (default: `learning_rate`)."}
    )
    lr_step_epochs: int | None = field(
        default=None,
        metadata={"help": "Stage-1 StepLR: multiply the learning rate by `lr_step_gamma` every this many epochs "
                          "(the DI-MML reference uses 70). Unset: stage 1 follows `lr_scheduler_type`."},
    )
    lr_step_gamma: float = field(default=0.1, metadata={"help": "Decay factor of the stage-1 StepLR."})
    logging_nan_inf_filter: bool = field(
        default=False,
        metadata={"help": "Transformers' filter of non-finite losses out of the logged mean. Off here: it costs a "
                          "device-to-host synchronisation every step, and a diverged run should show as one (the "
                          "trainer also warns at the first non-finite loss or gradient norm)."},
    )
    channels_last: bool = field(
        default=False,
        metadata={"help": "Keep convolution weights, and so activations, in channels_last (NHWC) memory format: "
                          "faster convolutions with bf16/fp16 on GPUs and on CPUs with oneDNN (BENCHMARKS.md rows 4 "
                          "and 6). No effect on MLP encoders; checkpoints are saved in the usual layout."},
    )

    model_selection: str = field(
        default="per_modality",
        metadata={"help": "How `load_best_model_at_end` selects the model of a detached method (dimml, unimodal). "
                          "`per_modality`: each modality's encoder and private head come from the evaluation where "
                          "that head's own validation `modality_selection_metric` was best; they are assembled at "
                          "the end of stage 1, dimml's fusion head is trained on them and the final model is chosen "
                          "among the stage-2 evaluations by `metric_for_best_model`. `fused`: one evaluation for "
                          "everything by `metric_for_best_model`, stage 2 starting from the best stage-1 checkpoint, "
                          "as the DI-MML reference does. The other methods always select `fused`.",
                  "choices": ["per_modality", "fused"]},
    )
    modality_selection_metric: str = field(
        default="accuracy",
        metadata={"help": "Per-modality selection: the validation metric of each modality's own head "
                          "(greater is better for accuracy and macro_f1, lower for loss).",
                  "choices": list(SELECTION_METRICS)},
    )

    def __post_init__(self) -> None:
        if self.model_selection not in ("per_modality", "fused"):
            raise ValueError(f"model_selection must be 'per_modality' or 'fused', got {self.model_selection!r}")
        if self.modality_selection_metric not in SELECTION_METRICS:
            raise ValueError(f"modality_selection_metric must be one of {list(SELECTION_METRICS)}, got "
                             f"{self.modality_selection_metric!r}")
        if self.stage1_epochs < 1 or self.stage2_epochs < 0:
            raise ValueError(
                f"stage1_epochs must be >= 1 and stage2_epochs >= 0, got {self.stage1_epochs}, {self.stage2_epochs}"
            )
        if self.max_steps not in (None, -1) and self.max_steps > 0:
            raise ValueError("DIMMLTrainingArguments counts in epochs (stage1_epochs/stage2_epochs); unset max_steps")
        self.num_train_epochs = self.stage1_epochs + self.stage2_epochs
        # Stage 1 leaves the fusion head without gradient and stage 2 the encoders (DESIGN §7).
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = True
        super().__post_init__()


# Methods that train each encoder on its own objective, so that each can be selected on its own validation score.
DETACHED_METHODS = ("dimml", "unimodal")


def modality_subsets(names: list[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of modalities, smallest first, each in config order."""
    return [subset for size in range(1, len(names) + 1) for subset in itertools.combinations(names, size)]


class _StageCallback(TrainerCallback):
    """Switches the trainer's stage at epoch boundaries (also for a resumed epoch) and selects effective dimensions."""

    def __init__(self, trainer: DIMMLTrainer) -> None:
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is a float progress counter; the tolerance absorbs its rounding at epoch ends.
        self.trainer.begin_epoch(int(math.floor((state.epoch or 0.0) + 1e-4)))
        return control


class DIMMLTrainer(AtomicCheckpointMixin, Trainer):
    """
    Trains a [`DIMMLForMultimodalClassification`] with its `config.method`: DI-MML (DESIGN §2, described below) or,
    with the same data, evaluation and logging, one of the methods it is compared with (one stage each,
    `stage2_epochs=0`): `mla` (per batch, one optimiser step per modality on the shared head, whose weight gradient
    is projected, DESIGN §3), `dmrnet` (modality dropout, Gaussian embedding, KL and hard-combination CE, DESIGN §4),
    `joint` (one CE on the fused head) and `unimodal` (the sum of the modalities' own CEs: each encoder alone).

    - Stage 1 (`stage1_epochs`): per modality, private-head CE + `shared_weight` * shared-classifier CE, plus
      `duc_weight` * DUC from epoch `config.duc_start_epoch` on; no term mixes two encoders' features.
    - Stage 2 (`stage2_epochs`): encoders frozen (eval mode, no gradient), the fusion head trained with CE.
    - Evaluation: certainty-weighted prediction (accuracy, macro-F1), each head's accuracy and the accuracy of every
      non-empty modality subset; metrics come from the package's `evaluate` module.
    - Every logging step also logs each loss component and each head's training accuracy since the last log.

    Pass a [`DIMMLTrainingArguments`]. `compute_loss` returns a per-batch mean; the Trainer divides it by the
    gradient-accumulation steps (exactly once: `loss_is_scaled_for_ga = False`).
    """

    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, DIMMLTrainingArguments):
            raise TypeError(f"DIMMLTrainer needs DIMMLTrainingArguments, got {type(self.args).__name__}")
        config = self.model.config
        self.method: str = config.method
        self.modality_names: list[str] = list(config.modality_names)
        if self.method != "dimml" and self.args.stage2_epochs:
            raise ValueError(f"method {self.method!r} has a single stage: set stage2_epochs=0 (stage1_epochs is the "
                             "training budget)")
        if self.method == "mla" and self.args.gradient_accumulation_steps != 1:
            raise ValueError("MLA takes one optimiser step per modality and batch: gradient_accumulation_steps "
                             "must be 1")
        # Per-modality model selection (README.md, Training): only for the detached methods, and only where the user
        # asked for model selection at all.
        self._selection: ModalitySelection | None = None
        if self.args.load_best_model_at_end and self.args.model_selection == "per_modality" and \
                self.method in DETACHED_METHODS:
            if self.method == "dimml" and self.args.stage2_epochs < 1:
                raise ValueError("per-modality model selection trains DI-MML's fusion head on the assembled encoders: "
                                 "set stage2_epochs >= 1, or model_selection='fused'")
            self._selection = ModalitySelection(self.modality_names, self.args.modality_selection_metric)
        if self.args.channels_last:
            # A convolution runs in its weight's memory format: activations are NHWC from the first convolution on.
            self.model.to(memory_format=torch.channels_last)
        self.stage = 1
        # Per-epoch Python copies of model state the steps branch on: no device sync per step.
        self._duc_mask: torch.Tensor | None = None
        self._dmrnet_hard_combination = -1
        self._fusion_in_use_now: bool | None = None  # set for the duration of an evaluation loop
        self._divergence_reported = False
        self._metric = load_multimodal_metric()
        if self.compute_metrics is None:
            self.compute_metrics = self._compute_metrics
        # Training statistics since the last log: sums on the device, one tensor per group of keys logged together,
        # and sample counts per key on the host.
        self._train_sums: dict[tuple[str, ...], torch.Tensor] = {}
        self._train_counts: dict[str, int] = defaultdict(int)
        self.add_callback(_StageCallback(self))

    # --- data ----------------------------------------------------------------------------------------------------

    def _set_signature_columns_if_needed(self) -> None:
        # forward() takes the modalities as **kwargs, which signature inspection cannot see.
        if self._signature_columns is None:
            self._signature_columns = [*self.modality_names, "labels", "label"]

    @staticmethod
    def _split_inputs(inputs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        modalities = {key: value for key, value in inputs.items() if key not in ("labels", "label")}
        labels = inputs.get("labels", inputs.get("label"))
        return modalities, labels

    # --- stages --------------------------------------------------------------------------------------------------

    @property
    def _unwrapped(self) -> nn.Module:
        # Trainer keeps the bare model in `self.model` (wrappers live in `self.model_wrapped`); unwrap_model() would
        # cost ~0.35 ms per call in the step.
        return self.model

    def begin_epoch(self, epoch: int) -> None:
        """Per-epoch state changes, also for a resumed epoch: DI-MML's stage (stage 2 starts from the best stage-1
        checkpoint) and, once, DUC's effective dimensions; DMRNet's hard combination once its warm-up is over."""
        model = self._unwrapped
        self.stage = 1 if epoch < self.args.stage1_epochs else 2
        if self.method == "dmrnet":
            if epoch >= model.config.dmrnet_warmup_epochs and int(model.dmrnet_hard_combination) < 0:
                # The statistics are already summed over processes at every step (see _dmrnet_loss).
                mean_variance = model.dmrnet_variance_sum / model.dmrnet_variance_count.clamp_min(1)
                mean_variance[model.dmrnet_variance_count == 0] = -1.0
                model.dmrnet_hard_combination.fill_(int(mean_variance.argmax()))
            self._dmrnet_hard_combination = int(model.dmrnet_hard_combination)  # read once per epoch, not per step
            return
        if self.method != "dimml":
            return
        if self.stage == 2 and not bool(model.fusion_head_trained):
            # Stage 2 starts from the selected stage-1 encoders when model selection is on: each modality's own best
            # (per_modality), or, as in the reference, the best stage-1 checkpoint (fused). A resumed stage 2 finds
            # the flag set: its checkpoint already holds those encoders.
            best = self.state.best_model_checkpoint
            if self._selection is not None:
                self.assemble_selected_modalities()
            elif self.args.load_best_model_at_end and best is not None:
                self.accelerator.wait_for_everyone()  # the main process may still be writing it
                self._load_from_checkpoint(best, model=model)
            model.fusion_head_trained.fill_(True)
        elif (
            epoch >= model.config.duc_start_epoch
            and model.config.duc_weight > 0
            and not bool(model.duc_mask_ready)
        ):
            model.duc_mask.copy_(self.select_effective_dimensions())
            model.duc_mask_ready.fill_(True)
        self._duc_mask = model.duc_mask if bool(model.duc_mask_ready) else None

    # --- per-modality model selection -----------------------------------------------------------------------------

    def _modality_modules(self) -> dict[str, nn.Module]:
        """What a modality's selection keeps: its encoder and its private head."""
        model = self._unwrapped
        return {name: nn.ModuleDict({"encoder": model.dimml.encoders[name], "private_head": model.private_heads[name]})
                for name in self.modality_names}

    def assemble_selected_modalities(self) -> None:
        """Loads each modality's encoder and private head from the evaluation where it was best."""
        self._selection.assemble(self._modality_modules())
        logger.info("assembled each modality from its best validation epoch: %s", self._selection.summary())

    def _determine_best_metric(self, metrics: dict[str, float], trial) -> bool:
        # Per-modality selection: stage-1 evaluations update each modality's best and are never the final model
        # (dimml's is chosen among the stage-2 evaluations; unimodal's is assembled at the end of training).
        if self._selection is None or self.stage == 2:
            return super()._determine_best_metric(metrics, trial)
        self._selection.update(metrics, self.state.epoch, self.state.global_step, self._modality_modules())
        return False

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        # A checkpoint carries the per-modality bests, so a resumed run keeps them.
        if _internal_call and self._selection is not None and self.args.should_save:
            self._selection.save(output_dir or self.args.output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if model is None and self._selection is not None:  # resuming (not loading a best checkpoint)
            self._selection.load(resume_from_checkpoint)

    def train(self, *args: Any, **kwargs: Any):
        result = super().train(*args, **kwargs)
        if self._selection is not None and self.method == "unimodal":
            # One stage: the final model is the assembly of each modality's best.
            self.assemble_selected_modalities()
        return result

    def model_selection_summary(self) -> dict[str, Any]:
        """Which evaluation each part of the final model comes from (training_summary.json, the card).

        `rule`: `per_modality`, `fused` or `last` (no model selection); `encoders`: per modality, the epoch its encoder
        comes from; `final`: the epoch and stage of the checkpoint the rest of the model comes from.
        """
        history = [entry for entry in self.state.log_history if any(key.startswith("eval_") for key in entry)]
        last_epoch = self.state.epoch
        if not self.args.load_best_model_at_end:
            rule = "last"
        elif self._selection is not None:
            rule = "per_modality"
        else:
            rule = "fused"
        best_step = self.state.best_global_step if rule != "last" else None
        final_epoch = next((entry["epoch"] for entry in history if entry.get("step") == best_step), None)
        if rule == "per_modality" and self.method == "unimodal":
            final_epoch = None  # nothing but the assembled encoders and their heads
        summary: dict[str, Any] = {"rule": rule}
        if final_epoch is not None or rule == "last":
            epoch = final_epoch if final_epoch is not None else last_epoch
            summary["final"] = {"epoch": epoch, "stage": 1 if epoch <= self.args.stage1_epochs else 2}
            if rule != "last":
                summary["final"][f"validation_{self.args.metric_for_best_model}"] = self.state.best_metric
        if rule == "per_modality":
            summary["metric"] = self._selection.metric
            summary["encoders"] = self._selection.summary()
        else:
            # One epoch for every encoder: the last stage-1 epoch that trained them (last), or the best stage-1
            # evaluation by metric_for_best_model (fused: stage 2 starts from it; the Trainer's rule, ties earliest).
            stage1 = [entry for entry in history if entry["epoch"] <= self.args.stage1_epochs + 1e-6]
            encoder_epoch = min(last_epoch, self.args.stage1_epochs)
            key = self.args.metric_for_best_model or "loss"
            key = key if key.startswith("eval_") else f"eval_{key}"
            scored = [entry for entry in stage1 if key in entry]
            if rule == "fused" and scored:
                pick = max if self.args.greater_is_better else min
                encoder_epoch = pick(scored, key=lambda entry: entry[key])["epoch"]
                if "final" in summary and summary["final"]["stage"] == 1:
                    encoder_epoch = summary["final"]["epoch"]
            summary["encoders"] = {name: {"epoch": encoder_epoch} for name in self.modality_names}
        return summary

    @torch.no_grad()
    def select_effective_dimensions(self) -> torch.Tensor:
        """Boolean `(M, d)`: per modality, the dimensions above the mean nearest-class-mean accuracy (DESIGN §2).

        Features are eval-mode features of the whole training set, gathered from all processes (sequential
        dataloader, duplicates of the last uneven batch dropped by `gather_for_metrics`).
        """
        model = self._unwrapped
        was_training = model.training
        model.eval()
        features: dict[str, list[torch.Tensor]] = defaultdict(list)
        labels: list[torch.Tensor] = []
        for batch in self.get_eval_dataloader(self.train_dataset):
            modality_inputs, batch_labels = self._split_inputs(batch)
            batch_features = self.model(**modality_inputs).features  # the prepared forward runs under autocast
            for name in self.modality_names:
                features[name].append(self.accelerator.gather_for_metrics(batch_features[name].float()).cpu())
            labels.append(self.accelerator.gather_for_metrics(batch_labels).cpu())
        model.train(was_training)
        all_labels = torch.cat(labels)
        mask = torch.stack([
            select_effective_dimensions(torch.cat(features[name]), all_labels, model.config.num_labels)
            for name in self.modality_names
        ])
        return mask.to(model.duc_mask.device)

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """Stage 1 follows `lr_step_epochs` (StepLR) or `lr_scheduler_type` over its own steps; stage 2 is constant."""
        if self.lr_scheduler is None:
            optimizer = optimizer if optimizer is not None else self.optimizer
            args = self.args
            steps_per_epoch = max(1, num_training_steps // int(args.num_train_epochs))
            stage1_steps = steps_per_epoch * args.stage1_epochs
            if args.lr_step_epochs:
                step_size = args.lr_step_epochs * steps_per_epoch

                def stage1_factor(step: int) -> float:
                    return args.lr_step_gamma ** (step // step_size)
            else:
                reference = get_scheduler(
                    args.lr_scheduler_type, optimizer=optimizer,
                    num_warmup_steps=args.get_warmup_steps(stage1_steps), num_training_steps=stage1_steps,
                    scheduler_specific_kwargs=args.lr_scheduler_kwargs,
                )
                if not isinstance(reference, torch.optim.lr_scheduler.LambdaLR):
                    raise ValueError(
                        f"lr_scheduler_type={args.lr_scheduler_type!r} is not a step-indexed schedule; use "
                        "linear, cosine, constant, ... or lr_step_epochs"
                    )
                stage1_factor = reference.lr_lambdas[0]
            stage2_factor = (args.stage2_learning_rate or args.learning_rate) / args.learning_rate

            def factor(step: int) -> float:
                return stage1_factor(step) if step < stage1_steps else stage2_factor

            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    # --- losses --------------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        modality_inputs, labels = self._split_inputs(inputs)
        if not model.training:
            outputs = model(**modality_inputs, labels=labels)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        config = self._unwrapped.config
        if self.method == "dimml" and self.stage == 1:
            outputs = model(**modality_inputs, training_stage=1)
            mask = self._duc_mask
            loss, components = dimml_stage1_loss(
                outputs.modality_logits, outputs.shared_logits, outputs.features, labels,
                shared_weight=config.shared_weight, duc_weight=config.duc_weight,
                duc_temperature=config.duc_temperature, effective_mask=mask,
            )
        elif self.method == "dimml":
            self._unwrapped.dimml.eval()  # frozen encoders: BatchNorm statistics must not move either
            outputs = model(**modality_inputs, training_stage=2)
            loss = nn.functional.cross_entropy(outputs.fusion_logits.float(), labels)
            components = {"loss_fusion": loss.detach()}
        elif self.method == "unimodal":
            outputs = model(**modality_inputs)
            losses = {n: nn.functional.cross_entropy(z.float(), labels) for n, z in outputs.modality_logits.items()}
            loss = sum(losses.values())
            components = {f"loss_{n}": value.detach() for n, value in losses.items()}
        elif self.method == "joint":
            outputs = model(**modality_inputs)
            loss = nn.functional.cross_entropy(outputs.logits.float(), labels)
            components = {"loss_fusion": loss.detach()}
        elif self.method == "dmrnet":
            loss, components, outputs = self._dmrnet_loss(model, modality_inputs, labels)
        else:
            raise ValueError(f"compute_loss does not train method {self.method!r} (MLA steps in training_step)")
        self._accumulate_train_stats(components, outputs, labels)
        return (loss, outputs) if return_outputs else loss

    def _dmrnet_loss(self, model, modality_inputs, labels):
        unwrapped = self._unwrapped
        config = unwrapped.config
        present = draw_modality_subsets(labels.shape[0], len(self.modality_names), device=labels.device)
        outputs = model(**modality_inputs, modality_mask=present)
        combination = unwrapped.combination_index(present)
        hard = self._dmrnet_hard_combination
        loss, components = dmrnet_loss(
            outputs.logits, outputs.latent_mean, outputs.latent_logvar, labels, combination, hard,
            kl_weight=config.dmrnet_kl_weight, hcr_weight=config.dmrnet_hcr_weight,
        )
        if hard < 0:  # warm-up: mean variance of each combination, summed over processes at every step
            variance = outputs.latent_logvar.detach().float().exp().mean(dim=1).double()
            sums = torch.zeros(2, unwrapped.dmrnet_variance_sum.shape[0], dtype=torch.float64, device=labels.device)
            sums[0].index_add_(0, combination, variance)
            sums[1].index_add_(0, combination, torch.ones_like(variance))
            sums = self.accelerator.reduce(sums, "sum")
            unwrapped.dmrnet_variance_sum += sums[0]
            unwrapped.dmrnet_variance_count += sums[1]
        return loss, components, outputs

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.method != "mla":
            return super().training_step(model, inputs, num_items_in_batch)
        return self._mla_training_step(model, inputs)

    def _mla_training_step(self, model, inputs) -> torch.Tensor:
        """One optimiser step per modality, in turn, on that modality's encoder and the shared head (DESIGN §3).

        Before each step after the very first, the projector absorbs the previous step's mean feature and the head's
        weight gradient is projected with it. The Trainer's own optimiser step that follows finds no gradients.
        """
        model.train()
        modality_inputs, labels = self._split_inputs(inputs)
        unwrapped = self._unwrapped
        config = unwrapped.config
        progress = self.state.global_step / max(1, self.state.max_steps)
        alpha = config.mla_alpha_start + (config.mla_alpha_end - config.mla_alpha_start) * progress
        total = torch.zeros((), device=labels.device)
        for name in self.modality_names:
            with self.compute_loss_context_manager():
                outputs = model(**{name: modality_inputs[name]})
            loss = nn.functional.cross_entropy(outputs.modality_logits[name].float(), labels)
            self.accelerator.backward(loss)
            head = unwrapped.shared_classifier.weight
            # At the very first step the previous mean is still zero: the update leaves P = I (no device sync to
            # test for it).
            mla_update_projector(unwrapped.mla_projector, unwrapped.mla_previous_mean, alpha)
            if head.grad is not None:
                head.grad.copy_(mla_project_head_gradient(head.grad, unwrapped.mla_projector))
            if self.args.max_grad_norm:
                self.accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            mean_feature = outputs.features[name].detach().float().mean(dim=0)
            unwrapped.mla_previous_mean.copy_(self.accelerator.reduce(mean_feature, "mean"))
            total = total + loss.detach()
            self._accumulate_train_stats({f"loss_{name}": loss.detach()}, outputs, labels)
        return total

    # --- logging -------------------------------------------------------------------------------------------------

    def _accumulate_train_stats(self, components: dict[str, torch.Tensor], outputs, labels: torch.Tensor) -> None:
        """Adds the step's loss components (times the batch size) and each head's number of correct predictions.

        Stacked: a few kernels per step instead of a few per statistic (~50 for DI-MML), which a launch-bound GPU
        step would feel; the sample counts are host integers.
        """
        batch = labels.shape[0]
        heads = {f"accuracy_{n}": z for n, z in (outputs.modality_logits or {}).items()}
        heads.update({f"accuracy_shared_{n}": z for n, z in (outputs.shared_logits or {}).items()})
        if self.method == "dimml" and self.stage == 2:
            heads["accuracy_fusion"] = outputs.fusion_logits
        if self.method != "mla":  # MLA's steps see one modality each: no fused prediction in training
            heads["accuracy"] = outputs.logits
        if components:
            self._add_train_sums(tuple(components), torch.stack(list(components.values())).double() * batch)
        if heads:
            correct = torch.stack(list(heads.values())).argmax(-1) == labels
            self._add_train_sums(tuple(heads), correct.sum(-1, dtype=torch.float64))
        for key in (*components, *heads):  # per key: MLA adds each modality's step separately
            self._train_counts[key] += batch

    def _add_train_sums(self, keys: tuple[str, ...], values: torch.Tensor) -> None:
        total = self._train_sums.get(keys)
        if total is None:
            self._train_sums[keys] = values
        else:
            total.add_(values)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the loss components and training accuracies since the last log, summed over processes."""
        if "loss" in logs and self._train_sums:
            # One reduction for all: sums, then counts (every process accumulates the same groups, in step order).
            names = [name for keys in self._train_sums for name in keys]
            device = self.args.device
            sums = torch.cat([total.to(device) for total in self._train_sums.values()])
            counts = torch.tensor([self._train_counts[name] for name in names], dtype=torch.float64, device=device)
            totals = self.accelerator.reduce(torch.cat([sums, counts]), "sum").tolist()
            summed: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
            for name, total, count in zip(names, totals[: len(names)], totals[len(names):]):
                summed[name][0] += total
                summed[name][1] = count  # the per-key count already covers every group holding the key
            for name, (total, count) in summed.items():
                if count > 0:
                    logs[f"train_{name}"] = total / count
            self._train_sums.clear()
            self._train_counts.clear()
        self._warn_if_diverged(logs)
        super().log(logs, start_time)

    def _warn_if_diverged(self, logs: dict[str, float]) -> None:
        # With `logging_nan_inf_filter` on, the Trainer drops non-finite losses from the logged mean; the components
        # and the gradient norm still show them. Without fp16's loss scaler, which skips such steps, the weights are
        # NaN now.
        if self.args.fp16 or self._divergence_reported:
            return
        values = [value for key, value in logs.items()
                  if key in ("loss", "grad_norm") or key.startswith("train_loss")]
        if any(isinstance(value, float) and not math.isfinite(value) for value in values):
            self._divergence_reported = True
            logger.warning(
                f"non-finite gradient norm or loss at step {self.state.global_step}: the weights are no longer "
                "finite and training will not recover. Lower the learning rate, or use fp32"
                + (" (bf16 on a CPU: see 'Known issues' in the README)" if self.args.bf16 and
                   self.args.device.type == "cpu" else "")
            )

    # --- evaluation ----------------------------------------------------------------------------------------------

    def _fusion_in_use(self) -> bool:
        # DI-MML's fusion head is neither weighted in nor reported before stage 2 has trained it (also when the
        # best checkpoint is from stage 1): its accuracy would be noise.
        if self._fusion_in_use_now is not None:
            return self._fusion_in_use_now
        return self.method == "dimml" and bool(self._unwrapped.fusion_head_trained)

    def evaluation_loop(self, *args: Any, **kwargs: Any):
        # The fusion flag is read once per evaluation (a device-to-host copy), not once per batch.
        self._fusion_in_use_now = None
        self._fusion_in_use_now = self._fusion_in_use()
        try:
            return super().evaluation_loop(*args, **kwargs)
        finally:
            self._fusion_in_use_now = None

    def _head_names(self) -> list[str]:
        """What `prediction_step` returns, in order: the final prediction, each modality alone, DI-MML's shared
        classifier per modality and fusion head, then every modality subset (each method's own way)."""
        names = ["final", *self.modality_names]
        if self.method == "dimml":
            names += [f"shared_{n}" for n in self.modality_names]
        if self._fusion_in_use():
            names += ["fusion"]
        names += ["subset_" + "+".join(subset) for subset in modality_subsets(self.modality_names)]
        return names

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Returns the class predicted by every head and every modality subset, `(batch, num_heads)`, and each
        modality's own cross-entropy per sample, `(batch, M)` (its validation loss, for per-modality selection)."""
        modality_inputs, labels = self._split_inputs(inputs)
        with torch.no_grad():
            outputs = model(**modality_inputs, labels=labels)
            loss = outputs.loss.detach() if outputs.loss is not None else None
            if prediction_loss_only:
                return loss, None, None
            heads = [outputs.logits]
            heads += [outputs.modality_logits[n] for n in self.modality_names]
            if self.method == "dimml":
                heads += [outputs.shared_logits[n] for n in self.modality_names]
            if self._fusion_in_use():
                heads += [outputs.fusion_logits]
            # forward_heads is not the (autocast-wrapped) forward: give it the same mixed precision explicitly, so
            # that the full subset and the single-modality subsets agree with the outputs above.
            with self.accelerator.autocast():
                for subset in modality_subsets(self.modality_names):
                    subset_features = {name: outputs.features[name] for name in subset}
                    heads.append(self._unwrapped.forward_heads(subset_features).logits)
            modality_losses = torch.stack([
                nn.functional.cross_entropy(outputs.modality_logits[n].float(), labels, reduction="none")
                for n in self.modality_names
            ], dim=1)
        predictions = torch.stack([head.argmax(-1) for head in heads], dim=1)
        return loss, (predictions, modality_losses), labels

    def _compute_metrics(self, eval_prediction: EvalPrediction) -> dict[str, float]:
        predictions, modality_losses = (np.asarray(part) for part in eval_prediction.predictions)
        references = np.asarray(eval_prediction.label_ids)
        names = self._head_names()
        per_head = {name: predictions[:, index] for index, name in enumerate(names) if name != "final"}
        metrics = self._metric.compute(
            predictions=predictions[:, 0], references=references, modality_predictions=per_head,
            macro_f1_for=self.modality_names,
        )
        for index, name in enumerate(self.modality_names):
            metrics[f"loss_{name}"] = float(modality_losses[:, index].mean())
        return metrics
