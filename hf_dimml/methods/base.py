"""What a training method is to the trainer: one class per method, looked up once by name (`hf_dimml.methods`).

A method owns everything that differs between methods: its knobs (a dataclass mixed into `DIMMLTrainingArguments`),
the check of the arguments, the per-epoch hook, the loss (or a whole training step), the heads whose accuracy is
logged and evaluated, the training state that must survive a resume, the head layout of the model it trains, and its
card text. The trainer runs the Hugging Face training loop around it and never names a method.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Trainer

__all__ = ["METHOD_STATE_FILE", "TrainingMethod"]

# Written into every checkpoint folder of a method with training state (effective dimensions, MLA's projector, ...).
METHOD_STATE_FILE = "method_state.safetensors"


class TrainingMethod:
    """Base class of the training methods. Subclasses set the class attributes and override the hooks they need.

    Class attributes:
        name: the `--method` name, recorded in the config.
        head_layout: the model's heads (`DIMMLConfig.head_layout`).
        arguments: a dataclass whose fields (each with its one default) become `DIMMLTrainingArguments` fields.
        num_stages: 2 for DI-MML (stage 2 trains the fusion head on frozen encoders), else 1.
        detached: each encoder is trained on its own objective with its own head, so that per-modality model
            selection applies (README, "Model selection for the detached methods").
        display, venue, description, citation: the model card's text.
    """

    name: ClassVar[str]
    head_layout: ClassVar[str]
    arguments: ClassVar[type | None] = None
    num_stages: ClassVar[int] = 1
    detached: ClassVar[bool] = False
    display: ClassVar[str] = ""
    venue: ClassVar[str] = ""
    description: ClassVar[str] = ""
    citation: ClassVar[str] = ""

    def __init__(self, trainer: Trainer) -> None:
        # `trainer` is the DIMMLTrainer that runs this method (typed by its base: the trainer imports the methods).
        self.trainer = trainer
        self.stage = 1

    # --- conveniences ------------------------------------------------------------------------------------------

    @property
    def args(self):
        return self.trainer.args

    @property
    def model(self) -> nn.Module:
        """The bare model (the Trainer keeps wrappers in `model_wrapped`)."""
        return self.trainer.model

    @property
    def modality_names(self) -> list[str]:
        return list(self.model.config.modality_names)

    @classmethod
    def hyperparameters(cls, args: Any, config: Any) -> dict[str, Any]:
        """The settings that define this method's training, for the summary and the card."""
        if cls.arguments is None:
            return {}
        return {field.name: getattr(args, field.name) for field in dataclasses.fields(cls.arguments)}

    # --- hooks -------------------------------------------------------------------------------------------------

    def check(self) -> None:
        """Raises a ValueError for arguments this method cannot train with (called once, by the trainer)."""
        if self.num_stages == 1 and self.args.stage2_epochs:
            raise ValueError(f"method {self.name!r} has a single stage: set stage2_epochs=0 (stage1_epochs is the "
                             "training budget)")

    def begin_epoch(self, epoch: int) -> None:
        """Called at the start of every epoch (also the epoch a resumed run continues)."""

    def compute_loss(self, model: nn.Module, modality_inputs: dict[str, torch.Tensor], labels: torch.Tensor):
        """`(loss, components, outputs)`: the per-batch mean loss, the detached loss components to log, and the
        model outputs (for the training accuracies)."""
        raise NotImplementedError(f"method {self.name!r} trains in training_step")

    def training_step(self, model: nn.Module, modality_inputs: dict[str, torch.Tensor],
                      labels: torch.Tensor) -> torch.Tensor | None:
        """A whole training step, for methods that take several optimiser steps per batch or rewrite gradients
        between backward and step; returns the detached loss. `None`: the Trainer's own step with `compute_loss`
        (`self.trainer.default_training_step` runs that step, for a method that acts after its backward)."""
        return None

    def train_heads(self, outputs) -> dict[str, torch.Tensor]:
        """Logits whose training accuracy is logged, by name (`accuracy_<name>`; `accuracy` for the prediction)."""
        heads = {f"accuracy_{n}": z for n, z in (outputs.modality_logits or {}).items()}
        heads.update({f"accuracy_shared_{n}": z for n, z in (outputs.shared_logits or {}).items()})
        heads["accuracy"] = outputs.logits
        return heads

    def eval_head_names(self) -> list[str]:
        """Heads evaluated beside the prediction and each modality alone (read once per evaluation)."""
        return []

    def eval_heads(self, outputs, names: list[str]) -> list[torch.Tensor]:
        """The logits of `eval_head_names()`, in that order."""
        return []

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Training state that a resumed run needs (saved with every checkpoint)."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restores `state_tensors()` from a checkpoint."""

    # --- persistence (the trainer calls these) ------------------------------------------------------------------

    def save_state(self, folder: str | os.PathLike) -> None:
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_tensors().items()}
        if not tensors:
            return
        path = Path(folder) / METHOD_STATE_FILE
        temporary = path.with_name(path.name + ".tmp")
        save_file(tensors, str(temporary), metadata={"method": self.name})
        os.replace(temporary, path)

    def load_state(self, folder: str | os.PathLike) -> bool:
        path = Path(folder) / METHOD_STATE_FILE
        if not path.is_file():
            return False
        device = self.trainer.args.device
        self.load_state_tensors({name: tensor.to(device) for name, tensor in load_file(str(path)).items()})
        return True
