"""NLCL losses as validated ``nn.Module``s (NLCL Sec. 3.2-3.3; docs/references.md, N3).

All logits are formed in fp32 whatever the autocast dtype (low temperatures overflow half precision).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.components.numerics import fp32, fp32_region


def _check_temperature(temperature: float) -> float:
    if not temperature > 1e-8:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return float(temperature)


class SupConLoss(nn.Module):
    """Supervised contrastive loss (Khosla et al. 2020, L^sup_out) over one set of unit vectors per sample.

    For anchor a with positives P(a) (same label, a excluded):
        l_a = -1/|P(a)| * sum_{p in P(a)} log( exp(z_a.z_p / t) / sum_{s != a} exp(z_a.z_s / t) )
    Returns the mean over anchors, then the mean over the batch. The official ``DisNCELoss`` sums over the batch;
    it only ever runs at batch 1, where the two agree, and the mean keeps the loss scale independent of batch size.

    Args:
        temperature: t (NLCL: 0.07).
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)

    @fp32_region
    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """features ``(B, N, D)`` (unit norm), labels ``(N,)`` or ``(B, N)`` -> scalar."""
        if features.dim() != 3:
            raise ValueError(f"features must be (B, N, D), got {tuple(features.shape)}")
        batch, n, _ = features.shape
        labels = labels.expand(batch, n) if labels.dim() == 1 else labels
        z = fp32(features)
        logits = torch.bmm(z, z.transpose(1, 2)) / self.temperature
        self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
        log_denominator = torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=2, keepdim=True)
        log_prob = logits - log_denominator
        positives = (labels[:, :, None] == labels[:, None, :]) & ~self_mask
        num_positives = positives.sum(2)
        # The check costs a host sync, so it runs where that is free; LayerContrastLoss checks group sizes upfront.
        if labels.device.type == "cpu" and bool((num_positives == 0).any()):
            raise ValueError("every label needs at least two members (an anchor with no positive is undefined)")
        per_anchor = -torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(2) / num_positives.clamp_min(1)
        return per_anchor.mean()


class LayerContrastLoss(nn.Module):
    """L_LayerContra: SupCon between the background group (label 1) and the rain group (label 0),
    official models/disnce.py.

    Both sides are anchors ("pull rain together, push the background away, and vice versa").
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        self.supcon = SupConLoss(temperature)

    def forward(self, background: torch.Tensor, rain: torch.Tensor) -> torch.Tensor:
        """background ``(B, P, D)``, rain ``(B, Q, D)`` -> scalar."""
        if background.shape[1] < 2 or rain.shape[1] < 2:
            raise ValueError("each group needs at least 2 vectors (every anchor needs a positive)")
        labels = torch.cat(
            (torch.ones(background.shape[1], dtype=torch.long), torch.zeros(rain.shape[1], dtype=torch.long))
        ).to(background.device)
        return self.supcon(torch.cat((background, rain), dim=1), labels)

    @staticmethod
    def floor(num_background: int, num_rain: int) -> float:
        """Value at perfect separation (each group collapsed, groups far apart): mean over anchors of log(|group|-1).

        ~4.67 for the official 8 / 128; the loss never goes below it, so log the excess over it
        (docs/references.md, N6).
        """
        total = num_background + num_rain
        return (num_background * math.log(max(num_background - 1, 1))
                + num_rain * math.log(max(num_rain - 1, 1))) / total


class PatchNCELoss(nn.Module):
    """L_LocContra: CUT's PatchNCE over the locations of one image (official models/patchnce.py).

    Query i (output feature, with gradient) must pick key i (input feature, detached) among the keys of all
    locations of the same image; the self-similarity of other locations' diagonal is filled with ``-10`` before
    dividing by t, exactly as CUT. Mean over all queries of the batch.
    """

    def __init__(self, temperature: float = 0.07, diagonal_fill: float = -10.0) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)
        self.diagonal_fill = diagonal_fill

    @fp32_region
    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """queries, keys ``(B, N, D)`` -> scalar."""
        if queries.shape != keys.shape:
            raise ValueError(f"queries {tuple(queries.shape)} and keys {tuple(keys.shape)} differ")
        q, k = fp32(queries), fp32(keys.detach())
        n = q.shape[1]
        positive = (q * k).sum(-1, keepdim=True)  # (B, N, 1)
        negative = torch.bmm(q, k.transpose(1, 2))
        negative = negative.masked_fill(torch.eye(n, dtype=torch.bool, device=q.device), self.diagonal_fill)
        logits = torch.cat((positive, negative), dim=2) / self.temperature
        target = torch.zeros(logits.shape[0] * n, dtype=torch.long, device=q.device)
        return F.cross_entropy(logits.flatten(0, 1), target)


@fp32_region
def lsgan_loss(prediction: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN objective: mean (D(x) - 1)^2 for real targets, mean D(x)^2 for fake (fp32)."""
    prediction = fp32(prediction)
    return (prediction - (1.0 if real else 0.0)).pow(2).mean()
