"""Training losses of DI-MML (docs/design.md §2), MLA (§3) and DMRNet (§4), as plain functions of tensors.

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
    ``S_ij = h_s,i[K] . sg(h_t,j[K]) / tau``, ``L = CE(S, arange(B))``. One matmul per pair. An empty K adds 0.

    On the CPU the columns K are gathered first (the matmuls cost B x B x |K| instead of B x B x d, about 3x less at
    the reference's ~150 of 512 dimensions). On accelerators the other dimensions are masked to zero instead: the same
    dot products with no data-dependent shapes and no device-to-host synchronisation in the training step.

    Args:
        features: M tensors `(batch, d)` in modality order.
        effective_mask: boolean `(M, d)`, row m = effective dimensions D_m.
        temperature: tau.
    """
    batch = features[0].shape[0]
    device = features[0].device
    targets = torch.arange(batch, device=device)
    total = features[0].new_zeros((), dtype=torch.float32)
    gather_columns = device.type == "cpu"
    if gather_columns:
        effective_mask = effective_mask.to(device)
    for teacher, teacher_features in enumerate(features):
        for student, student_features in enumerate(features):
            if teacher == student:
                continue
            pair_mask = effective_mask[teacher] & ~effective_mask[student]
            if gather_columns:
                columns = pair_mask.nonzero().flatten()
                if columns.numel() == 0:
                    continue
                student_side = student_features.index_select(1, columns)
                teacher_side = teacher_features.detach().index_select(1, columns)
            else:
                pair_dims = pair_mask.to(student_features.dtype)
                student_side = student_features * pair_dims
                teacher_side = (teacher_features * pair_dims).detach()
            similarity = (student_side @ teacher_side.T).float() / temperature
            pair_loss = F.cross_entropy(similarity, targets)
            total = total + (pair_loss if gather_columns else torch.where(pair_mask.any(), pair_loss, 0.0))
    return total


def effective_dimension_accuracy(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                                 chunk_size: int = 4096) -> torch.Tensor:
    """Per-dimension nearest-class-mean hit rate `(d,)`.

    Class means ``mu[c, k]`` over the samples; sample i hits on dimension k when the class whose mean is nearest to
    ``h[i, k]`` (1-D distance ``|h - mu|`` in float32) is its label. Ties go to the lowest class index, like `argmin`.

    Instead of the reference's per-sample loop (or an N x C x d distance tensor), this uses that in one dimension the
    values whose nearest mean is class y form an interval ``[low[y, k], high[y, k]]``: the interval ends are found
    once per (class, dimension) exactly for float32 arithmetic (start at the midpoint between two means and step to
    the last float where y still wins, ties included), and a hit is then two comparisons per feature value. Where that
    cannot be guaranteed exactly (non-finite values; two means so close that distances far from them could round to
    the same float; an end not settled in a few steps) the dimension is computed by brute force, `chunk_size`
    samples at a time (memory `chunk_size x C x` those dimensions).
    """
    features = features.float()
    num_samples, dim = features.shape
    device = features.device
    labels = labels.to(device)
    sizes = torch.bincount(labels, minlength=num_classes)
    grouped = features.index_select(0, torch.argsort(labels, stable=True))  # samples grouped by class, in order
    blocks = grouped.split(sizes.tolist())
    class_means = torch.stack([block.sum(dim=0) for block in blocks])
    class_means /= sizes.clamp_min(1).to(features.dtype)[:, None]

    # Pairwise (y, c, k) tables: y's mean, c's mean, whether y wins a tie against c.
    mean_y = class_means[:, None, :].expand(num_classes, num_classes, dim)
    mean_c = class_means[None, :, :].expand(num_classes, num_classes, dim)
    index = torch.arange(num_classes, device=device)
    y_first = (index[:, None] < index[None, :])[:, :, None]
    other = (index[:, None] != index[None, :])[:, :, None]

    def y_beats_c(value: torch.Tensor) -> torch.Tensor:
        distance_y, distance_c = (value - mean_y).abs(), (value - mean_c).abs()
        return (distance_y < distance_c) | ((distance_y == distance_c) & y_first)

    above, below = mean_c > mean_y, mean_c < mean_y
    # Away from their midpoint, |h - mu_y| and |h - mu_c| differ by the gap between the means; comparing them in
    # float32 is then exact as long as the gap exceeds a few ulps of the largest |h - mu| (else: brute force).
    reach = torch.maximum(features.amax(dim=0), -features.amin(dim=0)) + class_means.abs().amax(dim=0)
    gaps = (mean_c.double() - mean_y.double()).abs()
    unsafe = ((above | below) & (gaps <= reach.double() * 2.0 ** -22)).any(dim=1).any(dim=0)
    unsafe |= ~torch.isfinite(reach)
    # Against a class c above (below) y, y wins exactly up to (down to) one float: its edge, found by stepping from
    # the midpoint, where y_beats_c is monotone.
    infinity = torch.tensor(float("inf"), device=device)
    outward = torch.where(above, infinity, -infinity)
    edge = torch.where(above | below, ((mean_y.double() + mean_c.double()) / 2).float(), mean_y)
    settled = ~(above | below) | unsafe
    for _ in range(3):
        inside = y_beats_c(edge)
        further = torch.nextafter(edge, outward)
        settled = settled | (inside & ~y_beats_c(further))
        if bool(settled.all()):
            break
        edge = torch.where(settled, edge, torch.where(inside, further, torch.nextafter(edge, -outward)))
    unsafe |= ~settled.all(dim=1).all(dim=0)
    high = torch.where(above, edge, infinity).amin(dim=1)  # (C, d)
    low = torch.where(below, edge, -infinity).amax(dim=1)
    lost_tie = ((mean_c == mean_y) & ~y_first & other).any(dim=1)  # an earlier class has the same mean: never y
    high.masked_fill_(lost_tie, -float("inf"))
    low.masked_fill_(lost_tie, float("inf"))

    hits = torch.stack([
        ((block >= low[label]) & (block <= high[label])).sum(dim=0) for label, block in enumerate(blocks)
    ]).sum(dim=0)
    if bool(unsafe.any()):
        columns = unsafe.nonzero().flatten()
        column_means = class_means.index_select(1, columns)  # (C, k)
        for start in range(0, num_samples, chunk_size):
            chunk = features[start:start + chunk_size].index_select(1, columns)  # (n, k)
            # argmin over classes, one class at a time: first minimum wins, NaN counts as the minimum (as argmin).
            best = (chunk - column_means[0]).abs()
            nearest = torch.zeros(best.shape, dtype=torch.int64, device=device)
            for label in range(1, num_classes):
                distance = (chunk - column_means[label]).abs()
                better = (distance < best) | (distance.isnan() & ~best.isnan())
                best = torch.where(better, distance, best)
                nearest.masked_fill_(better, label)
            chunk_hits = (nearest == labels[start:start + chunk_size, None]).sum(dim=0)
            hits[columns] = (hits[columns] if start else 0) + chunk_hits
    return (hits.double() / num_samples).float()


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


# --- MLA (docs/design.md §3) --------------------------------------------------------------------------------------------


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


# --- DMRNet (docs/design.md §4) -----------------------------------------------------------------------------------------


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
        # A masked mean rather than indexing: no device sync, and 0 when the batch has no hard sample.
        selected = (combination == hard_combination).float()
        per_sample = F.cross_entropy(logits.float(), labels, reduction="none")
        hcr = (per_sample * selected).sum() / selected.sum().clamp_min(1.0)
        total = total + hcr_weight * hcr
        components["loss_hcr"] = hcr.detach()
    return total, components
