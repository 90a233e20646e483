"""PMR (Prototypical Modal Rebalance for Multimodal Learning, CVPR 2023), docs/design.md §11.

The `joint` model (one linear head over concat(h_1..h_M)) trained with its fused CE, plus a prototype term for the
modalities that lag behind:

- prototypes: at the start of every epoch, in eval mode and without gradient, c_m[k] = the mean of h_m over the
  training samples of class k (a random `pmr_prototype_fraction` of the training set, gathered from every process);
  from the third computation on, blended with the previous ones: c <- (1 - mu) c_new + mu c_old
  (`pmr_momentum_coef`);
- prototype logits p_m = -||h_m - c_m[k]||^2 (the prototypes are constants in the loss); prototype score
  s'_m = sum over the batch of softmax(p_m)[y], summed over processes, in fp32;
- in the modulation epochs (`pmr_modulation_starts` <= epoch <= `pmr_modulation_ends`), every modality m whose s'_m is
  below the mean of the others' s'_n gets + alpha CE(p_m, y) (`pmr_alpha`); the others get 0. With M = 2 this is the
  reference's rule (ratio s'_a / s'_v < 1: audio gets the term, > 1: visual, = 1: neither).

Loss: CE(fused logits, y) + those terms.

Taken from the reference code (fanyunfeng-bit/Modal-Imbalance-PMR, `main_Prototype_grad.py`, `--modulation Proto`),
with its defaults: `alpha` 1.0 (`pmr_alpha`), `momentum_coef` 0.2 (`pmr_momentum_coef`), `modulation_starts` 0 and
`modulation_ends` 100, inclusive, in epochs (`pmr_modulation_starts`, `pmr_modulation_ends`); `calculate_prototype`:
eval mode, no gradient, the first `len(loader) // 10` batches (at least one) of the shuffled training loader
(`pmr_prototype_fraction` 0.1: that share of the training samples, drawn with a generator seeded by `seed` and the
epoch, so that every process and a resumed run draw the same ones), prototypes computed once before the first epoch
and again after every epoch (= at the start of the next one here), blended with the previous ones only when its
`epoch <= 0` test fails, i.e. from the third computation on (kept: the first two are plain class means).

Deliberate differences from the reference:
- prototype logits are the negative SQUARED distance, as the paper's and docs/design.md §11's formula states; the
  released code's `EU_dist` takes the square root;
- a class absent from the drawn samples keeps its previous prototype (zero before the first computation); the
  reference divides by a zero count (NaN prototypes);
- the score decision uses the scores summed over processes, so that all processes of a data-parallel run add the same
  terms (the reference runs on one device);
- no gradient scaling of the fused CE: `main_Prototype_grad.py` has none (the per-modality coefficients in
  `main_CE_test_grad.py` are OGM-GE's, the baseline there); the paper's prototype entropy regularisation of the
  dominant modality is in neither the released PMR script nor docs/design.md §11, and is not implemented.

Training state (saved with each checkpoint, for a resume that ends with the same weights): the prototypes, the epoch
they were computed for (a run resumed mid-epoch keeps them instead of recomputing them from later weights) and the
per-class sample counts of the last computation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .base import TrainingMethod

__all__ = ["PMR", "PMRArguments", "pmr_prototype_logits", "pmr_prototypes", "pmr_scores", "pmr_weights"]


@dataclass
class PMRArguments:
    """PMR's knobs (reference `main_Prototype_grad.py`: alpha 1.0, momentum_coef 0.2, modulation epochs 0 to 100,
    prototypes from a tenth of the training loader)."""

    pmr_alpha: float = field(default=1.0, metadata={
        "help": "PMR: weight alpha of the prototype CE added to each lagging modality (reference `--alpha` 1.0)."})
    pmr_momentum_coef: float = field(default=0.2, metadata={
        "help": "PMR: weight of the previous prototypes when blending them with the new class means, from the third "
                "computation on (reference `--momentum_coef` 0.2)."})
    pmr_prototype_fraction: float = field(default=0.1, metadata={
        "help": "PMR: share of the training set (a random draw per epoch) whose eval-mode features give the class "
                "means (reference: the first tenth of the shuffled training loader's batches)."})
    pmr_modulation_starts: int = field(default=0, metadata={
        "help": "PMR: first epoch (0-based) with the prototype term (reference `--modulation_starts` 0)."})
    pmr_modulation_ends: int = field(default=100, metadata={
        "help": "PMR: last epoch (0-based, inclusive) with the prototype term (reference `--modulation_ends` 100)."})

    def __post_init__(self) -> None:
        if self.pmr_alpha < 0:
            raise ValueError(f"pmr_alpha must be >= 0, got {self.pmr_alpha}")
        if not 0.0 <= self.pmr_momentum_coef < 1.0:
            raise ValueError(f"pmr_momentum_coef must be in [0, 1), got {self.pmr_momentum_coef}")
        if not 0.0 < self.pmr_prototype_fraction <= 1.0:
            raise ValueError(f"pmr_prototype_fraction must be in (0, 1], got {self.pmr_prototype_fraction}")
        if self.pmr_modulation_starts < 0 or self.pmr_modulation_ends < self.pmr_modulation_starts:
            raise ValueError("need 0 <= pmr_modulation_starts <= pmr_modulation_ends, got "
                             f"{self.pmr_modulation_starts}, {self.pmr_modulation_ends}")
        super().__post_init__()


# --- the rule, as functions of tensors (tested against hand computations) ---------------------------------------------


def pmr_prototypes(features: torch.Tensor, labels: torch.Tensor, previous: torch.Tensor,
                   momentum: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`(prototypes (C, d), counts (C,))`: the class means of `features` (N, d); a class without samples keeps
    `previous`'s row. `momentum` (None: no blending): `(1 - momentum) * means + momentum * previous`."""
    num_classes = previous.shape[0]
    sums = torch.zeros(num_classes, features.shape[1], dtype=torch.float64, device=features.device)
    sums.index_add_(0, labels, features.double())
    counts = torch.bincount(labels, minlength=num_classes)
    seen = counts > 0
    means = previous.double().clone()
    means[seen] = sums[seen] / counts[seen].unsqueeze(1)
    if momentum is not None:
        means = (1.0 - momentum) * means + momentum * previous.double()
    return means.to(previous.dtype), counts


def pmr_prototype_logits(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """`(B, C)`: -||h_i - c[k]||^2, in fp32."""
    return -(features.float().unsqueeze(1) - prototypes.float().unsqueeze(0)).pow(2).sum(-1)


def pmr_scores(logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """`(M,)`, fp32, detached: per modality, sum over the batch of softmax(logits)[y]."""
    return torch.stack([
        torch.softmax(z.detach().float(), dim=-1).gather(1, labels.unsqueeze(1)).sum() for z in logits])


def pmr_weights(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """`(M,)`: alpha for every m whose score is below the mean of the others' scores, else 0."""
    others = (scores.sum() - scores) / (scores.numel() - 1)
    return torch.where(scores < others, torch.full_like(scores, alpha), torch.zeros_like(scores))


class PMR(TrainingMethod):
    name = "pmr"
    head_layout = "fused"
    arguments = PMRArguments
    display = "PMR"
    venue = "PMR: Prototypical Modal Rebalance for Multimodal Learning, CVPR 2023"
    description = (
        "PMR trains the concatenation-fusion model with its fused cross-entropy and measures each modality on its own "
        "with a non-parametric classifier: class prototypes (the class means of the modality's features, recomputed "
        "every epoch) and the distance of a feature to each prototype. In the modulation epochs, a modality whose "
        "prototype-based score on the batch is below the mean of the others' gets an extra prototypical cross-entropy "
        "loss, which pulls its features toward their class prototypes and speeds up the modality that learns slowly."
    )
    citation = """@inproceedings{fan2023pmr,
  title     = {PMR: Prototypical Modal Rebalance for Multimodal Learning},
  author    = {Fan, Yunfeng and Xu, Wenchao and Wang, Haozhao and Wang, Junxiao and Guo, Song},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {20029--20038},
  year      = {2023},
  eprint    = {2211.07089},
  archivePrefix = {arXiv}
}"""

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        config = self.model.config
        self.prototypes = torch.zeros(len(config.modalities), config.num_labels, config.hidden_size)
        self.prototype_counts = torch.zeros(config.num_labels, dtype=torch.long)
        self.prototype_epoch = -1  # the epoch whose start computed the prototypes; -1: none yet
        self.num_computations = 0  # how many times they were computed (the blending starts at the third)
        self.modulating = False

    # --- epochs ------------------------------------------------------------------------------------------------

    def begin_epoch(self, epoch: int) -> None:
        args = self.args
        self.modulating = args.pmr_modulation_starts <= epoch <= args.pmr_modulation_ends
        # Prototypes every epoch up to the last modulated one (the blend carries them from epoch to epoch); a run
        # resumed mid-epoch has this epoch's from its checkpoint.
        if epoch <= args.pmr_modulation_ends and self.prototype_epoch != epoch:
            self.compute_prototypes(epoch)

    def prototype_indices(self, epoch: int) -> list[int]:
        """The training samples whose features give this epoch's prototypes (the same on every process)."""
        size = len(self.trainer.train_dataset)
        if self.args.pmr_prototype_fraction >= 1.0:
            return list(range(size))
        count = max(1, math.ceil(self.args.pmr_prototype_fraction * size))
        generator = torch.Generator().manual_seed(self.args.seed * 100_003 + epoch)
        return sorted(torch.randperm(size, generator=generator)[:count].tolist())

    @torch.no_grad()
    def compute_prototypes(self, epoch: int) -> None:
        """Class means of the eval-mode features of the drawn training samples, gathered from all processes
        (sequential dataloader; `gather_for_metrics` drops the duplicates of the last uneven batch)."""
        trainer, model = self.trainer, self.model
        dataset = trainer.train_dataset
        indices = self.prototype_indices(epoch)
        subset = dataset.select(indices) if hasattr(dataset, "select") else torch.utils.data.Subset(dataset, indices)
        was_training = model.training
        model.eval()
        features: list[list[torch.Tensor]] = [[] for _ in self.modality_names]
        labels: list[torch.Tensor] = []
        for batch in trainer.get_eval_dataloader(subset):
            modality_inputs, batch_labels = trainer.split_inputs(batch)
            batch_features = model(**modality_inputs).features  # the prepared forward runs under autocast
            for index, name in enumerate(self.modality_names):
                features[index].append(trainer.accelerator.gather_for_metrics(batch_features[name].float()))
            labels.append(trainer.accelerator.gather_for_metrics(batch_labels))
        model.train(was_training)
        all_labels = torch.cat(labels).long()
        momentum = self.args.pmr_momentum_coef if self.num_computations >= 2 else None
        previous = self.prototypes.to(all_labels.device)
        results = [pmr_prototypes(torch.cat(features[index]), all_labels, previous[index], momentum)
                   for index in range(len(self.modality_names))]
        self.prototypes = torch.stack([prototypes for prototypes, _ in results])
        self.prototype_counts = results[0][1]
        self.prototype_epoch = epoch
        self.num_computations += 1

    # --- loss --------------------------------------------------------------------------------------------------

    def compute_loss(self, model, modality_inputs, labels):
        outputs = model(**modality_inputs)
        loss = nn.functional.cross_entropy(outputs.logits.float(), labels)
        components = {"loss_fusion": loss.detach()}
        terms = torch.zeros(len(self.modality_names), device=labels.device)
        if self.modulating:
            if self.prototypes.device != labels.device:
                self.prototypes = self.prototypes.to(labels.device)
            logits = [pmr_prototype_logits(outputs.features[name], self.prototypes[index])
                      for index, name in enumerate(self.modality_names)]
            # Every process takes the same decision: the scores summed over processes.
            scores = self.trainer.accelerator.reduce(pmr_scores(logits, labels), "sum")
            # Weighted by alpha or 0 on the device: no host synchronisation to pick the modalities.
            terms = pmr_weights(scores, self.args.pmr_alpha) * torch.stack(
                [nn.functional.cross_entropy(z, labels) for z in logits])
            loss = loss + terms.sum()
            terms = terms.detach()
        components.update({f"loss_proto_{name}": terms[index] for index, name in enumerate(self.modality_names)})
        return loss, components, outputs

    # --- state -------------------------------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"prototypes": self.prototypes, "prototype_counts": self.prototype_counts,
                "prototype_epoch": torch.tensor(self.prototype_epoch),
                "num_computations": torch.tensor(self.num_computations)}

    def load_state_tensors(self, tensors) -> None:
        self.prototypes = tensors["prototypes"].float()
        self.prototype_counts = tensors["prototype_counts"].long()
        self.prototype_epoch = int(tensors["prototype_epoch"])
        self.num_computations = int(tensors["num_computations"])
