"""MMPareto (Boosting Multimodal Learning with Innocent Unimodal Assistance, ICML 2024), docs/design.md §11.

Every encoder feeds the fused head and its own unimodal (private) head. Per encoder m and batch: g_mm, the gradient of
the fused CE, and g_m, that of the unimodal CE of modality m; if their cosine over the whole encoder (all its gradients
concatenated) is positive the weights are (1/2, 1/2), else the min-norm (MGDA) weights of the two. Per parameter
tensor: new = 2 (w_1 g_mm + w_2 g_m), r = ||g_mm + g_m|| / ||new||, gradient = gamma max(r, 1) new. The heads keep the
plain sum of the losses' gradients. Correct for any M >= 2: each encoder is paired with its own unimodal loss.

Defaults and where they come from (GeWu-Lab/MMPareto_ICML2024, code/MMPareto.py and code/min_norm_solvers.py):
- gamma = 1.5 ("enhanced magnitude"), hard-coded in `train_epoch` there;
- cosine > 0 (strictly) keeps (1/2, 1/2); otherwise `MinNormSolver.find_min_norm_element`, which for two vectors is
  the closed form w_1 = ((g_m - g_mm) . g_m) / ||g_mm - g_m||^2 (strictly inside (0, 1) when the cosine is negative),
  with the solver's end cases kept: 0.999 when g_mm . g_m >= ||g_mm||^2, 0.001 when >= ||g_m||^2, which a
  non-positive cosine reaches only when a gradient is exactly zero (an encoder with g_mm = 0 then gets gamma g_m, not
  nothing);
- the encoder is every parameter outside the heads (the reference skips names containing `head`): here each
  `model.dimml.encoders[name]`, its projection to the common width included;
- r compares with the gradient of the summed loss (the reference's `three_norm`, which is g_mm + g_m for an encoder).
The reference trains CREMA-D with SGD (momentum 0.9, weight decay 1e-4), learning rate 0.002 decayed by 0.1 every 30
of 50 epochs, batch 64: those are `TrainingArguments`, not this method's knobs.

Data parallelism: the forward runs on the bare model (not the DistributedDataParallel wrapper, whose reducer expects
one backward per forward); the per-loss gradients come from `torch.autograd.grad`; all of them are averaged over the
processes in one flattened all-reduce, and the cosine test and MGDA weights are decided from the averaged gradients,
so every process writes the same gradients (the rule on the global batch). Buffers (BatchNorm statistics) are
broadcast from process 0 before each forward, as DDP does. At every epoch start the processes compare fingerprints of
their weights (`replica_checks`, saved with each checkpoint).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from .base import TrainingMethod

__all__ = ["MMPareto", "MMParetoArguments", "mmpareto_encoder_gradient"]

logger = logging.getLogger(__name__)


@dataclass
class MMParetoArguments:
    mmpareto_gamma: float = field(default=1.5, metadata={
        "help": "MMPareto: gamma, the 'enhanced magnitude' factor of the combined encoder gradients (reference "
                "GeWu-Lab/MMPareto_ICML2024, code/MMPareto.py: 1.5)."})

    def __post_init__(self) -> None:
        if not self.mmpareto_gamma > 0:
            raise ValueError(f"mmpareto_gamma must be > 0, got {self.mmpareto_gamma}")
        super().__post_init__()


def mmpareto_encoder_gradient(
    g_mm: torch.Tensor, g_uni: torch.Tensor, sizes: list[int], gamma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The MMPareto gradient of one encoder from its two flattened gradients (all its parameter tensors
    concatenated, of `sizes` elements each). Returns `(gradient, cosine, conflict)`, conflict 1.0 where the cosine was
    not positive and the MGDA weights were used. No host synchronisation."""
    dot, norm_mm, norm_uni = g_mm @ g_uni, g_mm @ g_mm, g_uni @ g_uni
    cosine = dot / (norm_mm.sqrt() * norm_uni.sqrt()).clamp_min(1e-12)
    conflict = dot <= 0  # cosine not positive (a zero gradient included, as the reference's cosine is then 0)
    # Min-norm point of the segment [g_uni, g_mm]: w_1 = ((g_uni - g_mm) . g_uni) / ||g_mm - g_uni||^2, with the
    # reference solver's end cases (reached under conflict only by a zero gradient: g_mm = 0 gives 0.999, then
    # gamma g_uni after the rescaling below, so that the encoder still learns from its unimodal loss).
    distance = (norm_mm + norm_uni - 2 * dot).clamp_min(1e-30)
    w_mgda = torch.where(dot >= norm_mm, torch.full_like(dot, 0.999),
                         torch.where(dot >= norm_uni, torch.full_like(dot, 0.001), (norm_uni - dot) / distance))
    w_mm = torch.where(conflict, w_mgda.clamp(0.0, 1.0), torch.full_like(dot, 0.5))
    new = 2 * (w_mm * g_mm + (1 - w_mm) * g_uni)
    # Per parameter tensor: r = ||g_mm + g_uni|| / ||new||, scaled by gamma max(r, 1).
    # (Norms of contiguous views and one repeat of the per-tensor scales: no per-element index arithmetic.)
    norm_sum = torch.stack(torch._foreach_norm(torch.split(g_mm + g_uni, sizes)))
    norm_new = torch.stack(torch._foreach_norm(torch.split(new, sizes)))
    ratio = norm_sum / norm_new.clamp_min(1e-30)
    scale = torch.where(norm_new > 0, gamma * ratio.clamp_min(1.0), torch.zeros_like(ratio))
    repeats = torch.tensor(sizes, device=new.device)
    return new.mul_(torch.repeat_interleave(scale, repeats, output_size=new.numel())), cosine, conflict.to(new.dtype)


def _assign(parameters, flat: torch.Tensor, sizes: list[int]) -> None:
    """`.grad` of each parameter: its view of the flat gradient."""
    for parameter, gradient in zip(parameters, torch.split(flat, sizes)):
        parameter.grad = gradient.view_as(parameter).to(parameter.dtype)


def _flat(gradients, parameters) -> torch.Tensor:
    """Flattened float32 gradients, zeros where a parameter got none."""
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                      for g, p in zip(gradients, parameters)])


class MMPareto(TrainingMethod):
    name = "mmpareto"
    head_layout = "fused_with_private"
    arguments = MMParetoArguments
    display = "MMPareto"
    venue = "MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance, ICML 2024"
    description = (
        "MMPareto trains the fused classifier together with one unimodal head per modality. For each encoder, the "
        "gradient of the multimodal loss and that of its own unimodal loss are combined: with equal weights when they "
        "agree in direction (positive cosine), with the minimum-norm (MGDA, Pareto-stationary) weights when they "
        "conflict, then rescaled to at least the magnitude of their plain sum and enhanced by gamma. The unimodal "
        "losses so help the weaker modality's encoder without ever opposing the multimodal objective. A prediction "
        "uses the fused head."
    )
    citation = """@inproceedings{wei2024mmpareto,
  title     = {{MMPareto}: Boosting Multimodal Learning with Innocent Unimodal Assistance},
  author    = {Wei, Yake and Hu, Di},
  booktitle = {Proceedings of the 41st International Conference on Machine Learning (ICML)},
  series    = {Proceedings of Machine Learning Research},
  volume    = {235},
  pages     = {52559--52572},
  year      = {2024},
  eprint    = {2405.17730},
  archivePrefix = {arXiv}
}"""

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        # [checks, mismatches]: epoch starts at which the processes compared their weights, and how many differed.
        self.replica_checks = torch.zeros(2, dtype=torch.float64)
        self._layout = None  # parameter groups and segment ids, built at the first step

    def check(self) -> None:
        super().check()
        if self.args.gradient_accumulation_steps != 1:
            raise ValueError("MMPareto rewrites the encoders' gradients before every optimiser step: "
                             "gradient_accumulation_steps must be 1")
        if self.args.fp16:
            raise ValueError("MMPareto computes its per-loss gradients with torch.autograd.grad, outside fp16's loss "
                             "scaler: train with bf16 or in fp32")

    # --- the step --------------------------------------------------------------------------------------------------

    def _parameter_layout(self, device):
        if self._layout is None or self._layout["device"] != device:
            encoders = {name: [p for p in self.model.dimml.encoders[name].parameters() if p.requires_grad]
                        for name in self.modality_names}
            encoder_ids = {id(p) for params in encoders.values() for p in params}
            heads = [p for p in self.model.parameters() if p.requires_grad and id(p) not in encoder_ids]
            sizes = {name: [p.numel() for p in params] for name, params in encoders.items()}
            self._layout = {"device": device, "encoders": encoders, "heads": heads, "sizes": sizes}
        return self._layout

    def _broadcast_buffers(self) -> None:
        """Process 0's buffers (BatchNorm statistics) to every process, as DDP does before each forward."""
        buffers = [b for b in self.model.buffers() if b.numel()]
        for dtype in {b.dtype for b in buffers}:
            group = [b for b in buffers if b.dtype == dtype]
            flat = _flatten_dense_tensors(group)
            torch.distributed.broadcast(flat, src=0)
            for buffer, value in zip(group, _unflatten_dense_tensors(flat, group)):
                buffer.copy_(value)

    def training_step(self, model, modality_inputs, labels) -> torch.Tensor:
        trainer, bare = self.trainer, self.model
        distributed = trainer.accelerator.num_processes > 1
        model.train()
        if distributed and self.args.ddp_broadcast_buffers is not False:
            self._broadcast_buffers()
        layout = self._parameter_layout(labels.device)
        encoders, heads = layout["encoders"], layout["heads"]
        names = self.modality_names
        # The bare model: DDP's reducer would expect one backward of this forward (module docstring).
        with trainer.compute_loss_context_manager():
            outputs = bare(**modality_inputs)
        loss_mm = nn.functional.cross_entropy(outputs.logits.float(), labels)
        unimodal = {n: nn.functional.cross_entropy(outputs.modality_logits[n].float(), labels) for n in names}

        all_encoders = [p for n in names for p in encoders[n]]
        grads_mm = torch.autograd.grad(loss_mm, all_encoders + heads, retain_graph=True, allow_unused=True)
        head_grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads_mm[len(all_encoders):], heads)]
        parts = [_flat(grads_mm[:len(all_encoders)], all_encoders)]
        for index, n in enumerate(names):  # one extra backward per modality, through its own encoder
            grads = torch.autograd.grad(unimodal[n], encoders[n] + heads, retain_graph=index < len(names) - 1,
                                        allow_unused=True)
            parts.append(_flat(grads[:len(encoders[n])], encoders[n]))
            for head_grad, g in zip(head_grads, grads[len(encoders[n]):]):
                if g is not None:
                    head_grad.add_(g)  # heads: the plain sum of the losses' gradients
        parts.append(_flat(head_grads, heads))
        if distributed:  # one all-reduce; the rule below then sees the same (global-batch) gradients everywhere
            flat = trainer.accelerator.reduce(torch.cat(parts), "mean")
            parts = list(torch.split(flat, [part.numel() for part in parts]))
        flat_mm_all, *flat_uni, flat_heads = parts

        sizes = [sum(layout["sizes"][n]) for n in names]
        components = {"loss_fusion": loss_mm.detach(), **{f"loss_{n}": unimodal[n].detach() for n in names}}
        for n, g_mm, g_uni in zip(names, torch.split(flat_mm_all, sizes), flat_uni):
            grad, cosine, conflict = mmpareto_encoder_gradient(g_mm, g_uni, layout["sizes"][n], self.args.mmpareto_gamma)
            _assign(encoders[n], grad, layout["sizes"][n])
            components[f"cosine_{n}"] = cosine.detach()
            components[f"conflict_{n}"] = conflict.detach()  # logged mean: the fraction of MGDA steps
        _assign(heads, flat_heads, [p.numel() for p in heads])
        trainer.accumulate_train_stats(components, outputs, labels)
        return (loss_mm + sum(unimodal.values())).detach()

    # --- replicas -------------------------------------------------------------------------------------------------

    def begin_epoch(self, epoch: int) -> None:
        accelerator = self.trainer.accelerator
        if accelerator.num_processes < 2:
            return
        with torch.no_grad():
            params = [p.detach().double() for p in self.model.parameters()]
            fingerprint = torch.stack([torch.stack([p.sum(), (p * p).sum()]) for p in params]).reshape(-1)
        gathered = accelerator.gather(fingerprint.to(self.args.device)).view(accelerator.num_processes, -1)
        differ = not bool((gathered == gathered[0]).all())
        self.replica_checks += torch.tensor([1.0, float(differ)], dtype=torch.float64)
        if differ:
            logger.error("MMPareto: the processes' weights differ at the start of epoch %d", epoch)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"replica_checks": self.replica_checks}

    def load_state_tensors(self, tensors) -> None:
        self.replica_checks = tensors["replica_checks"].cpu().double()
