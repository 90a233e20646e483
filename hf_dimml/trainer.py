"""`DIMMLTrainer`: the training methods of `hf_dimml.methods` on top of `transformers.Trainer` (and so Accelerate).

The trainer runs the Hugging Face loop, evaluation, logging and model selection; what differs between methods (loss,
training step, per-epoch hook, heads, training state) is the method's, looked up once by `config.method`. One
`train()` call runs all of a method's stages, so a single `resume_from_checkpoint` covers them: the stage follows from
the epoch, and the method's state that must survive a resume is saved with every checkpoint
(`method_state.safetensors`).

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
from .methods import TrainingMethod, get_method, method_argument_classes
from .metrics import load_multimodal_metric
from .model_selection import SELECTION_METRICS, ModalitySelection

__all__ = ["DIMMLTrainingArguments", "DIMMLTrainer", "modality_subsets"]

logger = logging.getLogger(__name__)


@dataclass
class DIMMLTrainingArguments(*method_argument_classes(), TrainingArguments):
    """`TrainingArguments` plus the stages and every training method's knobs (one default each, from the method's
    own arguments dataclass in `hf_dimml.methods`). `num_train_epochs` is derived: `stage1_epochs + stage2_epochs`."""

    stage1_epochs: int = field(default=30, metadata={"help": "Epochs of stage 1 (encoders, private/shared heads, DUC)."})
    stage2_epochs: int = field(default=10, metadata={"help": "Epochs of stage 2 (frozen encoders, fusion head)."})
    stage2_learning_rate: float | None = field(
        default=None, metadata={"help": "Constant learning rate of stage 2 (default: `learning_rate`)."}
    )
    lr_step_epochs: int | None = field(
        default=None,
        metadata={"help": "Stage-1 StepLR: multiply the learning rate by `lr_step_gamma` every this many epochs "
                          "(docs/design.md §2: the reference uses 70). Unset: stage 1 follows `lr_scheduler_type`."},
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
        metadata={"help": "How `load_best_model_at_end` selects the model of a detached method (each encoder trained "
                          "on its own objective, with its own head). `per_modality`: each modality's encoder and "
                          "private head come from the evaluation where that head's own validation "
                          "`modality_selection_metric` was best; they are assembled at the end of stage 1, a "
                          "two-stage method's fusion head is trained on them and the final model is chosen among the "
                          "stage-2 evaluations by `metric_for_best_model`. `fused`: one evaluation for everything by "
                          "`metric_for_best_model`, stage 2 starting from the best stage-1 checkpoint, as the "
                          "reference implementations do. The other methods always select `fused`.",
                  "choices": ["per_modality", "fused"]},
    )
    modality_selection_metric: str = field(
        default="accuracy",
        metadata={"help": "Per-modality selection: the validation metric of each modality's own head "
                          "(greater is better for accuracy and macro_f1, lower for loss).",
                  "choices": list(SELECTION_METRICS)},
    )

    def __post_init__(self) -> None:
        # One __post_init__ chain: the methods' argument dataclasses check their own fields, then TrainingArguments.
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
        # Stage 1 leaves the fusion head without gradient and stage 2 the encoders (docs/design.md §7).
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = True
        if self.dataloader_pin_memory and (self.use_cpu or not torch.accelerator.is_available()):
            # Pinned host memory only speeds copies to an accelerator; on a CPU run torch warns at every DataLoader.
            self.dataloader_pin_memory = False
        super().__post_init__()


def modality_subsets(names: list[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of modalities, smallest first, each in config order."""
    return [subset for size in range(1, len(names) + 1) for subset in itertools.combinations(names, size)]


class _EpochCallback(TrainerCallback):
    """Runs the method's per-epoch hook at every epoch start (also for the epoch a resumed run continues)."""

    def __init__(self, trainer: DIMMLTrainer) -> None:
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is a float progress counter; the tolerance absorbs its rounding at epoch ends.
        self.trainer.method.begin_epoch(int(math.floor((state.epoch or 0.0) + 1e-4)))
        return control


class DIMMLTrainer(AtomicCheckpointMixin, Trainer):
    """
    Trains a [`DIMMLForMultimodalClassification`] with the training method its `config.method` names
    (`hf_dimml.methods`), with the same data, evaluation, logging, model selection and checkpoints for every method.

    - Training: the method's `compute_loss` (or its whole `training_step`), its `begin_epoch` hook at every epoch.
    - Evaluation: the final prediction (accuracy, macro-F1), each modality alone (accuracy, macro-F1, loss), the
      method's own extra heads and every non-empty modality subset; metrics come from the package's `evaluate`
      module.
    - Model selection (`load_best_model_at_end`): for detached methods, each modality's encoder and private head
      from its own best validation epoch (`model_selection="per_modality"`), else one epoch by `metric_for_best_model`.
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
        self.modality_names: list[str] = list(config.modality_names)
        method_class = get_method(config.method)
        if config.head_layout != method_class.head_layout:
            raise ValueError(f"method {config.method!r} trains a {method_class.head_layout!r} head layout; the model "
                             f"has {config.head_layout!r}")
        self.method: TrainingMethod = method_class(self)
        self.method.check()
        # Per-modality model selection (README.md, Training): only for the detached methods, and only where the user
        # asked for model selection at all.
        self.modality_selection: ModalitySelection | None = None
        if self.args.load_best_model_at_end and self.args.model_selection == "per_modality" and method_class.detached:
            if method_class.num_stages == 2 and self.args.stage2_epochs < 1:
                raise ValueError(f"per-modality model selection trains {method_class.display}'s fusion head on the "
                                 "assembled encoders: set stage2_epochs >= 1, or model_selection='fused'")
            self.modality_selection = ModalitySelection(self.modality_names, self.args.modality_selection_metric)
        if self.args.channels_last:
            # A convolution runs in its weight's memory format: activations are NHWC from the first convolution on.
            self.model.to(memory_format=torch.channels_last)
        # Methods that take their own steps (several optimiser steps per batch, rewritten gradients).
        self._method_steps = type(self.method).training_step is not TrainingMethod.training_step
        self._eval_head_names: list[str] | None = None  # the method's extra heads, read once per evaluation
        self._divergence_reported = False
        self._metric = load_multimodal_metric()
        if self.compute_metrics is None:
            self.compute_metrics = self._compute_metrics
        # Training statistics since the last log: sums on the device, one tensor per group of keys logged together,
        # and sample counts per key on the host.
        self._train_sums: dict[tuple[str, ...], torch.Tensor] = {}
        self._train_counts: dict[str, int] = defaultdict(int)
        self.add_callback(_EpochCallback(self))

    # --- data ----------------------------------------------------------------------------------------------------

    def _set_signature_columns_if_needed(self) -> None:
        # forward() takes the modalities as **kwargs, which signature inspection cannot see.
        if self._signature_columns is None:
            self._signature_columns = [*self.modality_names, "labels", "label"]

    @staticmethod
    def split_inputs(inputs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """A batch as `(modality tensors, labels)`."""
        modalities = {key: value for key, value in inputs.items() if key not in ("labels", "label")}
        labels = inputs.get("labels", inputs.get("label"))
        return modalities, labels

    # --- per-modality model selection -----------------------------------------------------------------------------

    def _modality_modules(self) -> dict[str, nn.Module]:
        """What a modality's selection keeps: its encoder and its private head."""
        model = self.model
        return {name: nn.ModuleDict({"encoder": model.dimml.encoders[name], "private_head": model.private_heads[name]})
                for name in self.modality_names}

    def assemble_selected_modalities(self) -> None:
        """Loads each modality's encoder and private head from the evaluation where it was best."""
        self.modality_selection.assemble(self._modality_modules())
        logger.info("assembled each modality from its best validation epoch: %s", self.modality_selection.summary())

    def _determine_best_metric(self, metrics: dict[str, float], trial) -> bool:
        # Per-modality selection: stage-1 evaluations update each modality's best and are never the final model
        # (a two-stage method's is chosen among the stage-2 evaluations; a one-stage method's is assembled at the end
        # of training).
        if self.modality_selection is None or self.method.stage == 2:
            return super()._determine_best_metric(metrics, trial)
        self.modality_selection.update(metrics, self.state.epoch, self.state.global_step, self._modality_modules())
        return False

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        # A checkpoint carries the method's training state and the per-modality bests, so a resumed run keeps them.
        if _internal_call and self.args.should_save:
            folder = output_dir or self.args.output_dir
            self.method.save_state(folder)
            if self.modality_selection is not None:
                self.modality_selection.save(folder)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if model is None:  # resuming (not loading a best checkpoint)
            self.method.load_state(resume_from_checkpoint)
            if self.modality_selection is not None:
                self.modality_selection.load(resume_from_checkpoint)

    def train(self, *args: Any, **kwargs: Any):
        result = super().train(*args, **kwargs)
        if self.modality_selection is not None and self.method.num_stages == 1:
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
        elif self.modality_selection is not None:
            rule = "per_modality"
        else:
            rule = "fused"
        best_step = self.state.best_global_step if rule != "last" else None
        final_epoch = next((entry["epoch"] for entry in history if entry.get("step") == best_step), None)
        if rule == "per_modality" and self.method.num_stages == 1:
            final_epoch = None  # nothing but the assembled encoders and their heads
        summary: dict[str, Any] = {"rule": rule}
        if final_epoch is not None or rule == "last":
            epoch = final_epoch if final_epoch is not None else last_epoch
            summary["final"] = {"epoch": epoch, "stage": 1 if epoch <= self.args.stage1_epochs else 2}
            if rule != "last":
                summary["final"][f"validation_{self.args.metric_for_best_model}"] = self.state.best_metric
        if rule == "per_modality":
            summary["metric"] = self.modality_selection.metric
            summary["encoders"] = self.modality_selection.summary()
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

    # --- training ------------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        modality_inputs, labels = self.split_inputs(inputs)
        if not model.training:
            outputs = model(**modality_inputs, labels=labels)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        loss, components, outputs = self.method.compute_loss(model, modality_inputs, labels)
        self.accumulate_train_stats(components, outputs, labels)
        return (loss, outputs) if return_outputs else loss

    def default_training_step(self, model, inputs, num_items_in_batch=None):
        """The Trainer's own step (forward, `compute_loss`, backward), for methods whose step acts after it."""
        return super().training_step(model, inputs, num_items_in_batch)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self._method_steps:
            return super().training_step(model, inputs, num_items_in_batch)
        modality_inputs, labels = self.split_inputs(self._prepare_inputs(inputs))
        return self.method.training_step(model, modality_inputs, labels)

    # --- logging -------------------------------------------------------------------------------------------------

    def accumulate_train_stats(self, components: dict[str, torch.Tensor], outputs, labels: torch.Tensor) -> None:
        """Adds the step's loss components (times the batch size) and each of the method's training heads' number of
        correct predictions.

        Stacked: a few kernels per step instead of a few per statistic (~50 for a method with many heads), which a
        launch-bound GPU step would feel; the sample counts are host integers.
        """
        batch = labels.shape[0]
        heads = self.method.train_heads(outputs)
        if components:
            self._add_train_sums(tuple(components), torch.stack(list(components.values())).double() * batch)
        if heads:
            correct = torch.stack(list(heads.values())).argmax(-1) == labels
            self._add_train_sums(tuple(heads), correct.sum(-1, dtype=torch.float64))
        for key in (*components, *heads):  # per key: a method may add each modality's step separately
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

    def evaluation_loop(self, *args: Any, **kwargs: Any):
        # The method's extra heads are read once per evaluation (a flag read is a device-to-host copy), not
        # once per batch.
        self._eval_head_names = self.method.eval_head_names()
        try:
            return super().evaluation_loop(*args, **kwargs)
        finally:
            self._eval_head_names = None

    def _head_names(self) -> list[str]:
        """What `prediction_step` returns, in order: the final prediction, each modality alone, the method's own
        extra heads (e.g. a shared classifier per modality, a fusion head), then every modality subset."""
        extra = self._eval_head_names if self._eval_head_names is not None else self.method.eval_head_names()
        subsets = ["subset_" + "+".join(subset) for subset in modality_subsets(self.modality_names)]
        return ["final", *self.modality_names, *extra, *subsets]

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Returns the class predicted by every head and every modality subset, `(batch, num_heads)`, and each
        modality's own cross-entropy per sample, `(batch, M)` (its validation loss, for per-modality selection)."""
        modality_inputs, labels = self.split_inputs(inputs)
        with torch.no_grad():
            outputs = model(**modality_inputs, labels=labels)
            loss = outputs.loss.detach() if outputs.loss is not None else None
            if prediction_loss_only:
                return loss, None, None
            heads = [outputs.logits]
            heads += [outputs.modality_logits[n] for n in self.modality_names]
            extra = self._eval_head_names if self._eval_head_names is not None else self.method.eval_head_names()
            heads += self.method.eval_heads(outputs, extra)
            # forward_heads is not the (autocast-wrapped) forward: give it the same mixed precision explicitly, so
            # that the full subset and the single-modality subsets agree with the outputs above.
            with self.accelerator.autocast():
                for subset in modality_subsets(self.modality_names):
                    subset_features = {name: outputs.features[name] for name in subset}
                    heads.append(self.model.forward_heads(subset_features).logits)
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
