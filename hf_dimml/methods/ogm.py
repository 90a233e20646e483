"""OGM and OGM-GE (Balanced Multimodal Learning via On-the-fly Gradient Modulation, CVPR 2022), docs/design.md §11.

The `joint` model (one linear head W = [W_1 ... W_M], b over concat(h_1..h_M)) trained with the CE of its fused
logits. After the backward pass, in the modulation epochs, each encoder's gradients are scaled by a coefficient that
slows down the modalities that are ahead:

- the head split per modality, z_m = W_m h_m + b / M, gives the score s_m = sum_i softmax(z_m)_i[y_i] (no gradient,
  fp32, summed over the micro-batches of one optimiser step and over processes: the reference's whole batch);
- rho_m = s_m / mean_{n != m} s_n; a modality with rho_m > 1 gets k_m = 1 - tanh(alpha relu(rho_m)), the others
  k_m = 1 (with M = 2 this is the reference's pair of ratios s_v / s_a and s_a / s_v);
- every modulated gradient g of encoder m becomes k_m g (`ogm`), or k_m g + N(0, (std(g) + 1e-8)^2) with std(g) the
  standard deviation of that tensor's gradient before scaling (`ogm_ge`, the generalisation enhancement). Which
  gradients: `ogm_modulate="conv"`, as the reference, only the 4-D ones (2-D convolution kernels; an MLP encoder or a
  1-D CNN has none, so nothing is modulated), `"all"` every parameter of the encoder (its projection to the common
  width included). The fused head is never modulated.

Each modality's coefficient is logged as `train_ogm_coeff_<name>` (1.0 outside the modulation epochs).

Defaults from the reference code (GeWu-Lab/OGM-GE_CVPR2022, `main.py`): `modulation_starts` 0 and `modulation_ends`
50, inclusive, in 0-based epochs (`ogm_modulation_starts`, `ogm_modulation_ends`); `alpha` has no default there, its
README's "default modulation setting" is 0.1 (and it recommends 0.8 for CREMA-D): `ogm_alpha` 0.1; the noise's
standard deviation is `grad.std() + 1e-8`; only gradients with 4 dimensions are touched (`ogm_modulate` "conv").

Deliberate differences from the reference:
- M >= 2 modalities: each modality is compared with the mean of the others (the reference has two);
- a tie (rho = 1 for both of two modalities) modulates neither; the reference's `if ratio_v > 1 ... else` then
  scales the audio encoder;
- the noise comes from the global torch RNG of the gradient's device (the reference too), drawn on the device
  without a host synchronisation, so that a run killed and resumed from a checkpoint (the Trainer saves and restores
  that RNG state) draws the same noise; with several processes the main process's noisy gradients are broadcast, so
  that the replicas never drift apart even if their RNG streams did;
- a parameter tensor with a single element has no standard deviation (NaN in torch): it gets no noise, only k_m;
- with gradient accumulation the coefficients come from all the micro-batches of the optimiser step and scale the
  accumulated gradient once, after the last backward.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from .base import TrainingMethod

__all__ = ["OGM", "OGMGE", "OGMArguments", "ogm_coefficients", "ogm_scores"]

logger = logging.getLogger(__name__)

MODULATE_CHOICES = ("conv", "all")


@dataclass
class OGMArguments:
    """OGM / OGM-GE's knobs (reference `main.py`: modulation epochs 0 to 50, alpha 0.1 in its README's default
    setting, only 4-D gradients modulated)."""

    ogm_alpha: float = field(default=0.1, metadata={
        "help": "OGM / OGM-GE: alpha in k = 1 - tanh(alpha * rho) for the modality ahead (reference README: 0.1 by "
                "default, 0.8 for CREMA-D)."})
    ogm_modulation_starts: int = field(default=0, metadata={
        "help": "OGM / OGM-GE: first epoch (0-based, inclusive) whose gradients are modulated."})
    ogm_modulation_ends: int = field(default=50, metadata={
        "help": "OGM / OGM-GE: last epoch (0-based, inclusive) whose gradients are modulated."})
    ogm_modulate: str = field(default="conv", metadata={
        "help": "OGM / OGM-GE: which encoder gradients are modulated: `conv`, the 4-D ones (2-D convolution kernels), "
                "as the reference; `all`, every encoder parameter. MLP and 1-D CNN encoders have no 4-D "
                "parameter: use `all` for them.",
        "choices": list(MODULATE_CHOICES)})

    def __post_init__(self) -> None:
        if not self.ogm_alpha >= 0:
            raise ValueError(f"ogm_alpha must be >= 0, got {self.ogm_alpha}")
        if self.ogm_modulation_starts < 0 or self.ogm_modulation_ends < self.ogm_modulation_starts:
            raise ValueError("ogm_modulation_starts must be >= 0 and ogm_modulation_ends >= ogm_modulation_starts, got "
                             f"{self.ogm_modulation_starts}, {self.ogm_modulation_ends}")
        if self.ogm_modulate not in MODULATE_CHOICES:
            raise ValueError(f"ogm_modulate must be one of {MODULATE_CHOICES}, got {self.ogm_modulate!r}")
        super().__post_init__()


def ogm_scores(features: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None,
               labels: torch.Tensor) -> torch.Tensor:
    """`(M,)` fp32: s_m = sum_i softmax(W_m h_m,i + b / M)[y_i], the fused head split per modality.

    Args:
        features: M tensors `(batch, d)` in the head's (config) order.
        weight: the fused head's `(C, M d)` weight; bias: its `(C,)` bias.
        labels: `(batch,)`.
    """
    num_modalities = len(features)
    stacked = torch.stack([f.float() for f in features], dim=1)  # (B, M, d)
    blocks = weight.float().view(weight.shape[0], num_modalities, -1)  # (C, M, d): W_m = blocks[:, m]
    logits = torch.einsum("bmd,cmd->bmc", stacked, blocks)
    if bias is not None:
        logits = logits + bias.float() / num_modalities
    index = labels.view(-1, 1, 1).expand(-1, num_modalities, 1)
    return logits.softmax(dim=-1).gather(2, index).squeeze(2).sum(dim=0)


def ogm_coefficients(scores: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`(rho, k)`, each `(M,)`: rho_m = s_m / mean_{n != m} s_n; k_m = 1 - tanh(alpha relu(rho_m)) where rho_m > 1,
    else 1 (the reference's Eq. 10 as its code computes it). No host synchronisation."""
    scores = scores.float()
    num_modalities = scores.shape[0]
    if num_modalities < 2:
        raise ValueError("OGM compares modalities: it needs at least two")
    others = (scores.sum() - scores) / (num_modalities - 1)
    ratio = scores / others.clamp_min(torch.finfo(scores.dtype).tiny)
    coefficients = torch.where(ratio > 1, 1 - torch.tanh(alpha * torch.relu(ratio)), torch.ones_like(ratio))
    return ratio, coefficients


class OGM(TrainingMethod):
    """OGM: the encoders' gradients scaled by k_m. `OGMGE` adds the Gaussian noise."""

    name = "ogm"
    head_layout = "fused"
    arguments = OGMArguments
    #: Whether the modulated gradients get Gaussian noise (OGM-GE's generalisation enhancement).
    noise = False
    display = "OGM"
    venue = "Balanced Multimodal Learning via On-the-fly Gradient Modulation, CVPR 2022"
    description = (
        "OGM (on-the-fly gradient modulation) trains the concatenation-fusion model with one cross-entropy loss and, "
        "after each backward pass, scales down the gradients of the encoder whose modality is ahead: the fused head "
        "is split into per-modality parts, each modality's confidence in the true class is summed over the batch, and "
        "a modality whose score exceeds the mean of the others' by the ratio rho gets its encoder's gradients scaled "
        "by 1 - tanh(alpha rho). The weaker modalities so keep training while the dominant one is slowed down. A "
        "prediction uses the fused head."
    )
    citation = """@inproceedings{peng2022ogmge,
  title     = {Balanced Multimodal Learning via On-the-fly Gradient Modulation},
  author    = {Peng, Xiaokang and Wei, Yake and Deng, Andong and Wang, Dong and Hu, Di},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {8238--8247},
  year      = {2022},
  eprint    = {2203.15332},
  archivePrefix = {arXiv}
}"""

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        self.epoch = 0
        # Scores summed over the micro-batches since the last optimiser step, and their local sample count.
        self._scores: torch.Tensor | None = None
        self._samples = 0

    def check(self) -> None:
        super().check()
        if self.args.ogm_modulate == "conv":
            untouched = [name for name in self.modality_names if not self.modulated_parameters(name)]
            if untouched:
                logger.warning(
                    "%s with ogm_modulate='conv' modulates only 4-D (convolution) gradients, as the reference; the "
                    "encoders of %s have none, so their gradients are never modulated. Set ogm_modulate='all' to "
                    "modulate every encoder parameter.", self.display, untouched)

    def modulated_parameters(self, name: str) -> list[nn.Parameter]:
        """The parameters of modality `name`'s encoder whose gradients are modulated, in module order."""
        parameters = [p for p in self.model.dimml.encoders[name].parameters() if p.requires_grad]
        if self.args.ogm_modulate == "conv":
            parameters = [p for p in parameters if p.dim() == 4]
        return parameters

    def begin_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def modulating(self) -> bool:
        return self.args.ogm_modulation_starts <= self.epoch <= self.args.ogm_modulation_ends

    # --- loss and step ------------------------------------------------------------------------------------------

    def compute_loss(self, model, modality_inputs, labels):
        outputs = model(**modality_inputs)
        loss = nn.functional.cross_entropy(outputs.logits.float(), labels)
        if self.modulating():
            head = self.model.fusion_head
            with torch.no_grad(), torch.autocast(labels.device.type, enabled=False):
                scores = ogm_scores([outputs.features[n].detach() for n in self.modality_names], head.weight,
                                    head.bias, labels)
            self._scores = scores if self._scores is None else self._scores + scores
        return loss, {"loss_fusion": loss.detach()}, outputs

    def training_step(self, model, modality_inputs, labels) -> torch.Tensor:
        """The Trainer's own step (forward, `compute_loss`, backward), then, after the last micro-batch of an optimiser
        step (when DDP has averaged the gradients), the modulation; the Trainer then clips and steps."""
        trainer = self.trainer
        loss = trainer.default_training_step(model, {**modality_inputs, "labels": labels})
        self._samples += labels.shape[0]
        if trainer.accelerator.sync_gradients:
            coefficients = self.modulate()
            # The coefficients of this optimiser step, weighted by its local samples like the loss components (the
            # placeholder's length is all `accumulate_train_stats` reads: `train_heads(None)` gives no heads).
            trainer.accumulate_train_stats(
                {f"ogm_coeff_{n}": k for n, k in zip(self.modality_names, coefficients.unbind())},
                None, labels.new_empty(self._samples))
            self._samples = 0
        return loss

    @torch.no_grad()
    def modulate(self) -> torch.Tensor:
        """Scales (and for OGM-GE perturbs) the encoders' gradients; returns the `(M,)` coefficients (ones outside
        the modulation epochs)."""
        names = self.modality_names
        device = self.args.device
        scores, self._scores = self._scores, None
        if not self.modulating() or scores is None:
            return torch.ones(len(names), device=device)
        accelerator = self.trainer.accelerator
        distributed = accelerator.num_processes > 1
        if distributed:
            scores = accelerator.reduce(scores, "sum")  # every process: the same coefficients
        _, coefficients = ogm_coefficients(scores, self.args.ogm_alpha)
        noisy: list[torch.Tensor] = []
        for name, coefficient in zip(names, coefficients.unbind()):
            grads = [p.grad for p in self.modulated_parameters(name) if p.grad is not None]
            if not grads:
                continue
            if not self.noise:
                torch._foreach_mul_(grads, coefficient.to(grads[0].dtype))
                continue
            for grad in grads:
                if grad.numel() > 1:
                    std = grad.float().std() + 1e-8  # of the gradient before scaling, as the reference
                    grad.mul_(coefficient.to(grad.dtype)).addcmul_(torch.randn_like(grad), std.to(grad.dtype))
                    noisy.append(grad)
                else:
                    grad.mul_(coefficient.to(grad.dtype))
        if distributed and noisy:
            self._broadcast_from_main(noisy)
        return coefficients

    @staticmethod
    def _broadcast_from_main(tensors: list[torch.Tensor]) -> None:
        """Process 0's values of `tensors` on every process (one broadcast per dtype), in place."""
        for dtype in dict.fromkeys(t.dtype for t in tensors):
            group = [t for t in tensors if t.dtype == dtype]
            flat = _flatten_dense_tensors(group)
            torch.distributed.broadcast(flat, src=0)
            for tensor, value in zip(group, _unflatten_dense_tensors(flat, group)):
                tensor.copy_(value)

    def train_heads(self, outputs) -> dict[str, torch.Tensor]:
        # `None`: the coefficients' statistics, logged once per optimiser step without heads.
        return {} if outputs is None else super().train_heads(outputs)


class OGMGE(OGM):
    """OGM-GE: OGM plus Gaussian noise N(0, std(g)^2) on every modulated gradient tensor g."""

    name = "ogm_ge"
    noise = True
    display = "OGM-GE"
    description = (
        "OGM-GE (on-the-fly gradient modulation with generalisation enhancement) trains the concatenation-fusion "
        "model with one cross-entropy loss and, after each backward pass, scales down the gradients of the encoder "
        "whose modality is ahead: the fused head is split into per-modality parts, each modality's confidence in the "
        "true class is summed over the batch, and a modality whose score exceeds the mean of the others' by the ratio "
        "rho gets its encoder's gradients scaled by 1 - tanh(alpha rho). Gaussian noise with the standard deviation "
        "of each gradient tensor is then added to the modulated gradients, which restores the stochastic-gradient "
        "noise that the scaling removes and helps generalisation. A prediction uses the fused head."
    )
