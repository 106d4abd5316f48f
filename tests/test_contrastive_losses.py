"""MoCo's InfoNCE and HCSC's selective instance / prototype losses (``nn.Module``s) against slow loops written
here in plain Python floats."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.hcsc.losses import SelectiveInstanceLoss, SelectivePrototypeLoss
from lightning_modules.hcsc.selection import prototype_candidates
from lightning_modules.moco.losses import InfoNCELoss


def unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return sum(float(x) * float(y) for x, y in zip(a, b))


def cross_entropy_first(logits: list[float]) -> float:
    """-log softmax(logits)[0], with -inf entries dropped from the denominator."""
    finite = [v for v in logits if v != float("-inf")]
    top = max(finite)
    return -(logits[0] - top - math.log(sum(math.exp(v - top) for v in finite)))


def infonce_loop(q, k, negatives, t: float, keep=None, masking: str = "zero") -> float:
    total = 0.0
    for i in range(q.shape[0]):
        logits = [dot(q[i], k[i]) / t]
        for j in range(negatives.shape[0]):
            value = dot(q[i], negatives[j]) / t
            if keep is not None and not keep[i, j]:
                value = 0.0 if masking == "zero" else float("-inf")
            logits.append(value)
        total += cross_entropy_first(logits)
    return total / q.shape[0]


@pytest.mark.parametrize("masking", ["zero", "exclude"])
def test_infonce_matches_a_loop_with_and_without_a_keep_mask(masking: str) -> None:
    q, k, negatives = unit(4, 5, seed=0), unit(4, 5, seed=1), unit(9, 5, seed=2)
    keep = torch.rand(4, 9, generator=torch.Generator().manual_seed(3)) > 0.4
    loss = InfoNCELoss(0.1, masking)
    assert loss(q, k, negatives)[0].item() == pytest.approx(infonce_loop(q, k, negatives, 0.1), rel=1e-9)
    assert loss(q, k, negatives, keep)[0].item() == pytest.approx(
        infonce_loop(q, k, negatives, 0.1, keep, masking), rel=1e-9)
    # The accuracy: how often the key beats every negative.
    wins = sum(all(dot(q[i], k[i]) > dot(q[i], n) for n in negatives) for i in range(4)) / 4
    assert loss(q, k, negatives)[1].item() == pytest.approx(wins)


def test_infonce_is_fp32_under_half_inputs_and_validates_its_arguments() -> None:
    q, k, negatives = unit(3, 4, seed=4), unit(3, 4, seed=5), unit(6, 4, seed=6)
    value, _ = InfoNCELoss(0.2)(q.half(), k.half(), negatives.half())
    assert value.dtype == torch.float32
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(0.0)
    with pytest.raises(ValueError, match="masking"):
        InfoNCELoss(0.2, "drop")
    with pytest.raises(ValueError, match="feature dimension"):
        InfoNCELoss()(q, k, unit(6, 3, seed=7))
    with pytest.raises(ValueError, match="keep must be"):
        InfoNCELoss()(q, k, negatives, torch.ones(3, 5, dtype=torch.bool))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("masking", ["zero", "exclude"])
def test_selective_instance_loss_matches_a_loop_over_levels(reduction: str, masking: str) -> None:
    q, k, queue = unit(3, 4, seed=8), unit(3, 4, seed=9), unit(7, 4, seed=10)
    masks = [torch.rand(3, 7, generator=torch.Generator().manual_seed(11 + level)) > 0.5 for level in range(3)]
    per_level = [infonce_loop(q, k, queue, 0.2, keep, masking) for keep in masks]
    expected = sum(per_level) if reduction == "sum" else sum(per_level) / 3
    loss = SelectiveInstanceLoss(0.2, masking, reduction)(q, k, queue, masks)
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="reduction"):
        SelectiveInstanceLoss(0.2, masking, "max")
    with pytest.raises(ValueError, match="one keep mask per level"):
        SelectiveInstanceLoss()(q, k, queue, [])


def prototype_loop(q, labels, centroids, phis, candidates, masks, masking: str) -> float:
    levels = []
    for a, c, phi, usable, keep in zip(labels, centroids, phis, candidates, masks):
        total = 0.0
        for i in range(q.shape[0]):
            own = int(a[i])
            logits = [dot(q[i], c[own]) / float(phi[own])]
            for m in range(c.shape[0]):
                value = dot(q[i], c[m]) / float(phi[m])
                if keep is not None and not keep[i, m]:
                    value = 0.0 if masking == "zero" else float("-inf")
                logits.append(value if usable[m] else float("-inf"))
            total += cross_entropy_first(logits)
        levels.append(total / q.shape[0])
    return sum(levels) / len(levels)


@pytest.mark.parametrize("masking", ["zero", "exclude"])
def test_selective_prototype_loss_matches_a_loop(masking: str) -> None:
    q = unit(4, 5, seed=20)
    centroids = [unit(6, 5, seed=21), unit(3, 5, seed=22)]
    phis = [torch.tensor([0.1, 0.2, 0.3, 0.15, 0.25, 0.05], dtype=torch.float64),
            torch.tensor([0.2, 0.1, 0.3], dtype=torch.float64)]
    labels = [torch.tensor([0, 2, 2, 5]), torch.tensor([1, 0, 0, 2])]
    candidates = [prototype_candidates(labels[0], 6), prototype_candidates(labels[1], 3, limit=2)]
    masks = [torch.rand(4, 6, generator=torch.Generator().manual_seed(23)) > 0.3, None]  # no selection at the top
    loss = SelectivePrototypeLoss(masking)(q, labels, centroids, phis, candidates, masks)
    assert loss.item() == pytest.approx(prototype_loop(q, labels, centroids, phis, candidates, masks, masking),
                                        rel=1e-9)
    with pytest.raises(ValueError, match="every level"):
        SelectivePrototypeLoss()(q, labels, centroids[:1], phis, candidates, masks)

