"""HCSC's selective coding as pure, vectorised functions (HCSC Sec. 3.3; official ``hcsc/hcsc.py``).

Notation: q (B, D) queries, k (B, D) keys, queue (K, D), level-l prototypes C (M, D) with concentrations
phi (M,), a(i) the level-l prototype of sample i (from the epoch-start clustering). All logits are fp32.

The instance logits with a keep mask are MoCo's (``lightning_modules.moco.losses.infonce_logits``); the losses
that use these pieces are in ``losses.py``.
"""

from __future__ import annotations

import torch

from lightning_modules.components.numerics import fp32, fp32_region
from lightning_modules.moco.losses import Masking, apply_mask


def _tempered_centroids(centroids: torch.Tensor, concentration: torch.Tensor) -> torch.Tensor:
    """c_m / max(phi_m, 1e-3): the posterior's temperature folded into the centroids (fp32)."""
    return fp32(centroids) / fp32(concentration).clamp_min(1e-3)[:, None]


@fp32_region
def queue_log_normaliser(queue: torch.Tensor, centroids: torch.Tensor, concentration: torch.Tensor) -> torch.Tensor:
    """log sum_m exp(n_j . c_m / max(phi_m, 1e-3)) for every queue item: (K,), the denominator of P(m | n_j)."""
    return torch.logsumexp(fp32(queue) @ _tempered_centroids(centroids, concentration).T, dim=1)


@fp32_region
def instance_keep_probability(
    queue: torch.Tensor, centroids: torch.Tensor, concentration: torch.Tensor, labels: torch.Tensor,
    normaliser: torch.Tensor | None = None,
) -> torch.Tensor:
    """p_ij = clamp(1 - P(a(i) | n_j), 0, 0.999), P(m | n_j) = softmax_m(n_j . c_m / max(phi_m, 1e-3)): (B, K).

    The probability that queue item j belongs to anchor i's own prototype is the probability that it is a false
    negative; it is kept with the complement. ``normaliser`` (``queue_log_normaliser`` of this queue, which the
    module keeps up to date as keys arrive) saves the (K, M) product that otherwise dominates the step.
    """
    if normaliser is None:
        normaliser = queue_log_normaliser(queue, centroids, concentration)
    own = _tempered_centroids(centroids[labels], concentration[labels])  # each anchor's own prototype
    log_posterior = fp32(queue) @ own.T - normaliser[:, None]  # (K, B)
    return (1.0 - log_posterior.T.exp()).clamp(0.0, 0.999)


def prototype_candidates(labels: torch.Tensor, num_prototypes: int, limit: int | None = None) -> torch.Tensor:
    """(M,) True for prototypes usable as negatives: not the positive of any sample of the (local) batch.

    ``limit`` reproduces the official ``range(im2cluster.max())``: ids >= limit are never negatives
    (an off-by-one shared with PCL; None = every prototype).
    """
    candidates = torch.ones(num_prototypes, dtype=torch.bool, device=labels.device)
    candidates[labels] = False
    if limit is not None:
        candidates[limit:] = False
    return candidates


def prototype_keep_probability(parent_probability: torch.Tensor, parent_labels: torch.Tensor) -> torch.Tensor:
    """r_im = clamp(1 - P(par(a(i)) | c_m), 1e-4, 0.999): (B, M).

    ``parent_probability`` (M_l, M_{l+1}) is softmax_p(c^l_m . c^{l+1}_p / phi^{l+1}_p); a negative prototype
    likely to share the anchor's parent is likely a false negative.
    """
    return (1.0 - parent_probability[:, parent_labels].T).clamp(1e-4, 0.999)


@fp32_region
def prototype_logits(
    q: torch.Tensor, centroids: torch.Tensor, concentration: torch.Tensor, labels: torch.Tensor,
    candidates: torch.Tensor, keep: torch.Tensor | None = None, masking: Masking = "zero",
) -> torch.Tensor:
    """[q.c_a(i) / phi_a(i), q.c_m / phi_m for candidate negatives m]: (B, 1 + M), positive first.

    Non-candidates are excluded (-inf); deselected candidates follow ``masking``.
    """
    similarity = fp32(q) @ fp32(centroids).T / fp32(concentration)
    positive = similarity.gather(1, labels[:, None])
    negatives = similarity if keep is None else apply_mask(similarity, keep, masking)
    negatives = negatives.masked_fill(~candidates[None, :], float("-inf"))
    return torch.cat((positive, negatives), dim=1)


def draw_keep_mask(probability: torch.Tensor) -> torch.Tensor:
    """Bernoulli draw of the selection mask. A diverged model yields NaN probabilities; they keep the candidate
    (no selection) instead of failing inside ``torch.bernoulli``, so the divergence guard can report the step."""
    return torch.bernoulli(probability.nan_to_num(nan=1.0).clamp(0.0, 1.0)).bool()
