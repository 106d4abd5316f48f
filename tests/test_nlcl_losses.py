"""NLCL losses against slow, obvious references written here, analytic values and gradient checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.nlcl.losses import LayerContrastLoss, PatchNCELoss, SupConLoss, lsgan_loss


def unit(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def supcon_loop(z: torch.Tensor, labels: list[int], t: float) -> float:
    """Khosla et al. L^sup_out for one set, anchor by anchor (the official DisNCELoss formula)."""
    n, total = len(labels), 0.0
    for a in range(n):
        denominator = sum(math.exp(float(z[a] @ z[s]) / t) for s in range(n) if s != a)
        positives = [p for p in range(n) if p != a and labels[p] == labels[a]]
        total += -sum(math.log(math.exp(float(z[a] @ z[p]) / t) / denominator) for p in positives) / len(positives)
    return total / n


def patchnce_loop(q: torch.Tensor, k: torch.Tensor, t: float) -> float:
    """CUT PatchNCE for one image, query by query: the diagonal of the negatives is -10 before / t."""
    n, total = q.shape[0], 0.0
    for i in range(n):
        logits = [float(q[i] @ k[i]) / t] + [(-10.0 if j == i else float(q[i] @ k[j])) / t for j in range(n)]
        top = max(logits)
        total += -(logits[0] - top - math.log(sum(math.exp(v - top) for v in logits)))
    return total / n


@pytest.mark.parametrize("t", [0.07, 0.5])
def test_supcon_matches_slow_reference(t: float) -> None:
    z = unit(2, 11, 6)
    labels = [1] * 4 + [0] * 7
    loss = SupConLoss(t)(z, torch.tensor(labels))
    expected = sum(supcon_loop(z[b], labels, t) for b in range(2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_supcon_per_sample_labels_and_batch_mean() -> None:
    z = unit(3, 6, 5, seed=3)
    labels = torch.tensor([[0, 0, 1, 1, 1, 2], [1, 1, 1, 0, 0, 0], [0, 1, 0, 1, 0, 1]])
    labels[0, 5] = 1  # every label needs two members
    loss = SupConLoss(0.2)(z, labels)
    expected = sum(supcon_loop(z[b], labels[b].tolist(), 0.2) for b in range(3)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_layer_contrast_floor_is_reached_by_perfectly_separated_groups() -> None:
    # Each group collapsed to one direction, the two directions opposite: the loss equals its analytic floor.
    direction = unit(1, 1, 16, seed=5)[0, 0]
    background = direction.expand(1, 8, 16)
    rain = (-direction).expand(1, 128, 16)
    loss = LayerContrastLoss(0.07)(background, rain)
    floor = (8 * math.log(7) + 128 * math.log(127)) / 136
    assert LayerContrastLoss.floor(8, 128) == pytest.approx(floor)
    assert floor == pytest.approx(4.67, abs=0.01)
    assert loss.item() == pytest.approx(floor, abs=1e-6)
    # Random features sit well above the floor (about 5.3, against the floor of about 4.67).
    random_loss = LayerContrastLoss(0.07)(unit(1, 8, 256, seed=1), unit(1, 128, 256, seed=2)).item()
    assert 5.0 < random_loss < 5.6


def test_layer_contrast_rejects_singleton_groups() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        LayerContrastLoss()(unit(1, 1, 4), unit(1, 5, 4))


def test_supcon_rejects_label_without_positive() -> None:
    with pytest.raises(ValueError, match="two members"):
        SupConLoss()(unit(1, 3, 4), torch.tensor([0, 0, 1]))


@pytest.mark.parametrize("t", [0.07, 1.0])
def test_patchnce_matches_slow_reference(t: float) -> None:
    q, k = unit(2, 9, 5, seed=1), unit(2, 9, 5, seed=2)
    loss = PatchNCELoss(t)(q, k)
    expected = (patchnce_loop(q[0], k[0], t) + patchnce_loop(q[1], k[1], t)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_patchnce_analytic_value_for_identical_equal_similarities() -> None:
    # q_i . k_i = 1 and q_i . k_j = 1 for all j: N+1 logits of 1/t except the -10 diagonal entry.
    n, t = 6, 0.5
    q = torch.ones(1, n, 4, dtype=torch.float64) / 2
    loss = PatchNCELoss(t)(q, q.clone())
    denominator = math.exp(1 / t) * n + math.exp(-10 / t)
    assert loss.item() == pytest.approx(-math.log(math.exp(1 / t) / denominator), rel=1e-9)


def test_patchnce_keys_receive_no_gradient() -> None:
    q = unit(1, 5, 4).requires_grad_()
    k = unit(1, 5, 4, seed=9).requires_grad_()
    PatchNCELoss()(q, k).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None


def test_losses_pass_gradcheck() -> None:
    z = unit(1, 6, 3, seed=4).requires_grad_()
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert torch.autograd.gradcheck(lambda x: SupConLoss(0.3)(x, labels), (z,))
    q = unit(2, 4, 3, seed=6).requires_grad_()
    k = unit(2, 4, 3, seed=7)
    assert torch.autograd.gradcheck(lambda x: PatchNCELoss(0.3)(x, k), (q,))


def test_half_precision_inputs_are_computed_in_fp32() -> None:
    z = unit(1, 10, 8, dtype=torch.float32)
    labels = torch.tensor([1] * 3 + [0] * 7)
    full = SupConLoss(0.07)(z, labels)
    half = SupConLoss(0.07)(z.to(torch.bfloat16), labels)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=2e-2)


def test_lsgan_targets() -> None:
    pred = torch.tensor([[0.5, 1.5], [1.0, 0.0]])
    assert lsgan_loss(pred, real=True).item() == pytest.approx(((0.5 - 1) ** 2 + 0.5**2 + 0 + 1) / 4)
    assert lsgan_loss(pred, real=False).item() == pytest.approx((0.25 + 2.25 + 1 + 0) / 4)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_temperature_is_validated(bad: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        SupConLoss(bad)
    with pytest.raises(ValueError, match="temperature"):
        PatchNCELoss(bad)
