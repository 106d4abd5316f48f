"""MoCo's InfoNCE (He et al., CVPR 2020, Eq. 1) as a validated ``nn.Module``, with the per-negative selection mask
that HCSC's instance-wise selective coding applies to the same logits (HCSC Sec. 3.3, Eq. 5).

    L = CE([q.k, s_1 q.n_1, ..., s_K q.n_K] / t, 0)      s = 1 everywhere for MoCo

``masking`` says what a deselected negative (s_ij = 0) becomes: ``zero`` (HCSC's official code: the logit is
multiplied by 0 and still adds e^0 = 1 to the denominator) or ``exclude`` (logit -inf: truly removed).
Logits and softmax are fp32 whatever the autocast precision.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.components.numerics import fp32, fp32_region

Masking = Literal["zero", "exclude"]
MASKINGS = ("zero", "exclude")


def apply_mask(logits: torch.Tensor, keep: torch.Tensor, masking: Masking) -> torch.Tensor:
    """Deselect the negatives where ``keep`` is False: their logit becomes 0 (``zero``) or -inf (``exclude``)."""
    if masking == "zero":
        return logits * keep.to(logits.dtype)
    if masking == "exclude":
        return logits.masked_fill(~keep.bool(), float("-inf"))
    raise ValueError(f"masking must be 'zero' or 'exclude', got {masking!r}")


@fp32_region
def infonce_logits(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float,
                   keep: torch.Tensor | None = None, masking: Masking = "zero") -> torch.Tensor:
    """[q.k, (q.n_j) s_ij] / t in fp32: (B, 1 + K), the positive first; ``keep`` (B, K) is s (None: all kept)."""
    q, k = fp32(q), fp32(k)
    similarities = q @ fp32(negatives).T
    if keep is not None:
        similarities = apply_mask(similarities, keep, masking)
    return torch.cat(((q * k).sum(1, keepdim=True), similarities), dim=1) / temperature


class InfoNCELoss(nn.Module):
    """InfoNCE of queries against their keys and a shared bank of negatives (MoCo's queue).

    Args:
        temperature: t of the logits (MoCo v2: 0.2; MoCo's CIFAR demo: 0.1).
        masking: what a deselected negative becomes when a ``keep`` mask is given (``zero`` | ``exclude``).

    ``forward(q, k, negatives, keep=None)`` takes unit-norm q, k (B, D) and negatives (K, D); it returns the mean
    cross-entropy and the instance accuracy (how often the key is the top logit, a training diagnostic).
    """

    def __init__(self, temperature: float = 0.2, masking: Masking = "zero") -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if masking not in MASKINGS:
            raise ValueError(f"masking must be one of {MASKINGS}, got {masking!r}")
        self.temperature, self.masking = float(temperature), masking

    @fp32_region
    def forward(self, q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, keep: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if q.shape != k.shape or q.shape[1] != negatives.shape[1]:
            raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)} and negatives {tuple(negatives.shape)} "
                             "must share the feature dimension (and q, k the batch)")
        if keep is not None and keep.shape != (q.shape[0], negatives.shape[0]):
            raise ValueError(f"keep must be (batch, negatives) = {(q.shape[0], negatives.shape[0])}, "
                             f"got {tuple(keep.shape)}")
        logits = infonce_logits(q, k, negatives, self.temperature, keep, self.masking)
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, target), (logits.argmax(1) == 0).float().mean()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, masking={self.masking}"
