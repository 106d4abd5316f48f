"""HCSC's two selective-coding losses as validated ``nn.Module``s (HCSC Sec. 3.3; official ``hcsc/hcsc.py``).

Both take masks already drawn (``selection.draw_keep_mask`` of the keep probabilities in ``selection.py``), so a
loss is a deterministic function of its inputs and can be checked against a slow reference. Logits are fp32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.hcsc.selection import prototype_logits
from lightning_modules.moco.losses import MASKINGS, InfoNCELoss, Masking

REDUCTIONS = ("sum", "mean")


class SelectiveInstanceLoss(nn.Module):
    """L_ins, instance-wise contrastive selective coding (Eq. 5-6): at every level l, MoCo's InfoNCE with the queue
    negatives that survived the selection s^l_ij ~ Bernoulli(1 - P_l(a_l(i) | n_j)); summed over the levels
    (official) or averaged.

    Args:
        temperature: t of the instance logits (MoCo's).
        masking: what a deselected negative becomes (``zero``: official; ``exclude``: -inf).
        reduction: ``sum`` (official) or ``mean`` over the levels.

    ``forward(q, k, queue, masks)``: unit-norm q, k (B, D), queue (K, D), one (B, K) keep mask per level.
    """

    def __init__(self, temperature: float = 0.2, masking: Masking = "zero", reduction: str = "sum") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"`model.instance_reduction` must be one of {REDUCTIONS}, got {reduction!r}")
        self.infonce, self.reduction = InfoNCELoss(temperature, masking), reduction

    def forward(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, masks: Sequence[torch.Tensor]
                ) -> torch.Tensor:
        if not masks:
            raise ValueError("SelectiveInstanceLoss needs one keep mask per level, got none")
        losses = torch.stack([self.infonce(q, k, queue, keep)[0] for keep in masks])  # L levels, not samples
        return losses.sum() if self.reduction == "sum" else losses.mean()


class SelectivePrototypeLoss(nn.Module):
    """L_proto, prototypical contrastive selective coding (Eq. 7-8): at every level l, CE over
    [q.c_a(i) / phi_a(i), (q.c_m / phi_m) t^l_im] where the candidate negatives m are the prototypes that are no
    sample's positive in the batch and t^l_im ~ Bernoulli(1 - P(par(a_l(i)) | c_m)) (no selection at the top
    level); averaged over the levels (official).

    Args:
        masking: what a deselected prototype becomes (``zero``: official; ``exclude``: -inf). Non-candidates
            are always excluded.

    ``forward(q, labels, centroids, concentrations, candidates, masks)``: per level, the (B,) prototype ids,
    the (M, D) prototypes, their (M,) concentrations phi, the (M,) candidate flags and a (B, M) keep mask or None.
    """

    def __init__(self, masking: Masking = "zero") -> None:
        super().__init__()
        if masking not in MASKINGS:
            raise ValueError(f"masking must be one of {MASKINGS}, got {masking!r}")
        self.masking = masking

    def forward(self, q: torch.Tensor, labels: Sequence[torch.Tensor], centroids: Sequence[torch.Tensor],
                concentrations: Sequence[torch.Tensor], candidates: Sequence[torch.Tensor],
                masks: Sequence[torch.Tensor | None]) -> torch.Tensor:
        levels = len(labels)
        if not levels or not len(centroids) == len(concentrations) == len(candidates) == len(masks) == levels:
            raise ValueError("SelectivePrototypeLoss needs labels, centroids, concentrations, candidates and masks "
                             f"for every level (got {len(labels)}, {len(centroids)}, {len(concentrations)}, "
                             f"{len(candidates)}, {len(masks)})")
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        losses = [F.cross_entropy(prototype_logits(q, c, phi, a, usable, keep, self.masking), target)
                  for a, c, phi, usable, keep in zip(labels, centroids, concentrations, candidates, masks)]
        return torch.stack(losses).mean()
