"""Training losses of DI-MML (DESIGN §2), as plain functions of features, logits and labels.

Nothing here assumes one process: every function works on the local batch; what is gathered across processes (the
effective-dimension statistics) is gathered by the caller, see `hf_dimml.trainer`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "duc_loss",
    "effective_dimension_accuracy",
    "select_effective_dimensions",
    "dimml_stage1_loss",
]


def duc_loss(features: list[torch.Tensor], effective_mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Dimension-decoupled unidirectional contrastive loss, summed over ordered modality pairs (teacher, student).

    For a pair, K = dimensions effective for the teacher but not the student; the student's features on K are pulled
    towards the (stop-gradient) teacher's features of the same sample against the other samples of the batch:
    ``S_ij = h_s,i[K] . sg(h_t,j[K]) / tau``, ``L = CE(S, arange(B))``. Masking the other dimensions to zero gives the
    same dot products as indexing K, with one matmul per pair and no data-dependent shapes. An empty K adds 0.

    Args:
        features: M tensors `(batch, d)` in modality order.
        effective_mask: boolean `(M, d)`, row m = effective dimensions D_m.
        temperature: tau.
    """
    batch = features[0].shape[0]
    targets = torch.arange(batch, device=features[0].device)
    total = features[0].new_zeros((), dtype=torch.float32)
    for teacher, teacher_features in enumerate(features):
        for student, student_features in enumerate(features):
            if teacher == student:
                continue
            pair_dims = (effective_mask[teacher] & ~effective_mask[student]).to(student_features.dtype)
            if not bool(pair_dims.any()):
                continue
            student_side = student_features * pair_dims
            teacher_side = (teacher_features * pair_dims).detach()
            similarity = (student_side @ teacher_side.T).float() / temperature
            total = total + F.cross_entropy(similarity, targets)
    return total


def effective_dimension_accuracy(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                                 chunk_size: int = 4096) -> torch.Tensor:
    """Per-dimension nearest-class-mean hit rate `(d,)`.

    Class means ``mu[c, k]`` over the samples; sample i hits on dimension k when the class whose mean is nearest to
    ``h[i, k]`` (1-D distance) is its label. Ties go to the lowest class index, like `argmin`. Batched over samples in
    chunks (memory N x C x d per chunk) instead of the reference's per-sample loop.
    """
    features = features.float()
    counts = torch.bincount(labels, minlength=num_classes).clamp_min(1).to(features.dtype)
    class_means = torch.zeros(num_classes, features.shape[1], dtype=features.dtype, device=features.device)
    class_means.index_add_(0, labels, features)
    class_means /= counts[:, None]
    hits = torch.zeros(features.shape[1], dtype=torch.float64, device=features.device)
    for start in range(0, features.shape[0], chunk_size):
        chunk, chunk_labels = features[start:start + chunk_size], labels[start:start + chunk_size]
        nearest = (chunk[:, None, :] - class_means[None]).abs().argmin(dim=1)  # (n, d)
        hits += (nearest == chunk_labels[:, None]).sum(dim=0).to(torch.float64)
    return (hits / features.shape[0]).float()


def select_effective_dimensions(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """D_m = dimensions whose nearest-class-mean accuracy is above the mean accuracy over dimensions (boolean `(d,)`)."""
    accuracy = effective_dimension_accuracy(features, labels, num_classes)
    return accuracy > accuracy.mean()


def dimml_stage1_loss(
    modality_logits: dict[str, torch.Tensor],
    shared_logits: dict[str, torch.Tensor],
    features: dict[str, torch.Tensor],
    labels: torch.Tensor,
    *,
    shared_weight: float,
    duc_weight: float,
    duc_temperature: float,
    effective_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DI-MML stage-1 loss: sum over modalities of private-head CE + w * shared-classifier CE, + lambda * DUC.

    No term mixes two encoders' features (DUC's teacher side is stop-gradient), so each encoder's gradient comes from
    its own modality's terms only. `effective_mask=None` means DUC is not active yet.

    Returns:
        The loss (a per-batch mean) and its components, detached, for logging.
    """
    components: dict[str, torch.Tensor] = {}
    total = labels.new_zeros((), dtype=torch.float32)
    for name in modality_logits:
        private = F.cross_entropy(modality_logits[name].float(), labels)
        shared = F.cross_entropy(shared_logits[name].float(), labels)
        total = total + private + shared_weight * shared
        components[f"loss_private_{name}"] = private.detach()
        components[f"loss_shared_{name}"] = shared.detach()
    if effective_mask is not None and duc_weight > 0:
        duc = duc_loss(list(features.values()), effective_mask, duc_temperature)
        total = total + duc_weight * duc
        components["loss_duc"] = duc.detach()
    return total, components
