"""Training losses of DI-MML (DESIGN §2), MLA (§3) and DMRNet (§4), as plain functions of tensors.

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
    "mla_update_projector",
    "mla_project_head_gradient",
    "draw_modality_subsets",
    "dmrnet_loss",
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


# --- MLA (DESIGN §3) --------------------------------------------------------------------------------------------


def mla_update_projector(projector: torch.Tensor, previous_mean: torch.Tensor, alpha: float) -> None:
    """Orthogonal weight modification, in place: ``k = P r``, ``P <- P - k k^T / (alpha + r^T k)``.

    `r` is the previous step's mean feature (a vector), so the denominator is a scalar (the released code divides
    by a matrix). After the update, ``P r = k * alpha / (alpha + r^T k)``: nearly orthogonal to r for small alpha.
    """
    r = previous_mean.to(projector.dtype)
    k = projector @ r
    projector -= torch.outer(k, k) / (alpha + r @ k)


def mla_project_head_gradient(weight_grad: torch.Tensor, projector: torch.Tensor) -> torch.Tensor:
    """``grad_W(H) @ P`` for the shared head's weight `(classes, d)`: the update keeps away from the directions of
    earlier modalities' features, so learning one modality does not overwrite what the head learnt from another."""
    return (weight_grad.float() @ projector.float()).to(weight_grad.dtype)


# --- DMRNet (DESIGN §4) -----------------------------------------------------------------------------------------


def draw_modality_subsets(batch_size: int, num_modalities: int, device=None, generator=None) -> torch.Tensor:
    """Per-sample modality dropout: a boolean `(batch, M)` mask, each row a non-empty subset drawn uniformly among
    the 2^M - 1 of them."""
    codes = torch.randint(1, 2**num_modalities, (batch_size,), device=device, generator=generator)
    bits = 2 ** torch.arange(num_modalities, device=device)
    return (codes[:, None] & bits) > 0


def dmrnet_loss(
    logits: torch.Tensor,
    latent_mean: torch.Tensor,
    latent_logvar: torch.Tensor,
    labels: torch.Tensor,
    combination: torch.Tensor,
    hard_combination: int,
    *,
    kl_weight: float,
    hcr_weight: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DMRNet: ``CE + alpha * KL(N(mu, sigma^2) || N(0, I)) + beta * L_HCR``.

    KL is summed over embedding dimensions and averaged over the batch. L_HCR is the CE averaged over the samples
    whose modality combination is the hard one (0 during warm-up, `hard_combination < 0`, or when the batch has
    none of them).
    """
    cross_entropy = F.cross_entropy(logits.float(), labels)
    mean, logvar = latent_mean.float(), latent_logvar.float()
    kl = (-0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum(dim=1)).mean()
    total = cross_entropy + kl_weight * kl
    components = {"loss_ce": cross_entropy.detach(), "loss_kl": kl.detach()}
    if hard_combination >= 0:
        selected = combination == hard_combination
        hcr = F.cross_entropy(logits[selected].float(), labels[selected]) if bool(selected.any()) else total.new_zeros(())
        total = total + hcr_weight * hcr
        components["loss_hcr"] = hcr.detach()
    return total, components
