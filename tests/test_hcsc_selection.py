"""HCSC selection probabilities, prototype logits and both losses against slow references written here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.hcsc.selection import (
    instance_keep_probability,
    prototype_candidates,
    prototype_keep_probability,
    prototype_logits,
    queue_log_normaliser,
)
from lightning_modules.moco.losses import infonce_logits


def unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def test_instance_keep_probability_matches_a_loop() -> None:
    queue, centroids = unit(7, 4, seed=0), unit(5, 4, seed=1)
    phi = torch.tensor([0.1, 0.3, 0.0005, 0.2, 0.25], dtype=torch.float64)
    labels = torch.tensor([0, 2, 4])
    keep = instance_keep_probability(queue, centroids, phi, labels)
    assert keep.shape == (3, 7)
    for i, a in enumerate(labels.tolist()):
        for j in range(7):
            logits = [float(queue[j] @ centroids[m]) / max(float(phi[m]), 1e-3) for m in range(5)]
            top = max(logits)
            posterior = math.exp(logits[a] - top) / sum(math.exp(v - top) for v in logits)
            assert keep[i, j].item() == pytest.approx(min(max(1 - posterior, 0.0), 0.999), rel=1e-4)
    # The module's cached normaliser gives the same probabilities; a stale one would not.
    normaliser = queue_log_normaliser(queue, centroids, phi)
    assert torch.allclose(instance_keep_probability(queue, centroids, phi, labels, normaliser), keep)
    assert not torch.allclose(instance_keep_probability(queue, centroids, phi, labels, normaliser + 0.5), keep)


def test_instance_keep_probability_is_clamped_below_one() -> None:
    # A queue item far from every other prototype than the anchor's: keep probability ~1, clamped at 0.999.
    centroids = torch.eye(3, dtype=torch.float64)
    queue = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    keep = instance_keep_probability(queue, centroids, torch.full((3,), 0.05, dtype=torch.float64), torch.tensor([0]))
    assert keep.item() == pytest.approx(0.999)
    own = instance_keep_probability(queue, centroids, torch.full((3,), 0.05, dtype=torch.float64), torch.tensor([1]))
    assert own.item() < 1e-6  # its own prototype: almost surely a false negative


@pytest.mark.parametrize("masking", ["zero", "exclude"])
def test_masked_instance_logits_match_a_loop(masking: str) -> None:
    q, k, queue = unit(3, 4, seed=2), unit(3, 4, seed=3), unit(6, 4, seed=4)
    keep = torch.tensor([[1, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    logits = infonce_logits(q, k, queue, 0.2, keep, masking)
    for i in range(3):
        assert logits[i, 0].item() == pytest.approx(float(q[i] @ k[i]) / 0.2)
        for j in range(6):
            value = float(q[i] @ queue[j]) / 0.2
            expected = value if keep[i, j] else (0.0 if masking == "zero" else float("-inf"))
            assert logits[i, 1 + j].item() == pytest.approx(expected)
    unselected = infonce_logits(q, k, queue, 0.2)
    assert torch.allclose(unselected[:, 1:], q @ queue.T / 0.2)


def test_prototype_candidates_exclude_every_batch_positive_and_the_official_limit() -> None:
    labels = torch.tensor([2, 5, 2, 0])
    assert prototype_candidates(labels, 7).tolist() == [False, True, False, True, True, False, True]
    assert prototype_candidates(labels, 7, limit=6).tolist() == [False, True, False, True, True, False, False]


def test_prototype_keep_probability_matches_a_loop() -> None:
    lower, upper = unit(6, 3, seed=5), unit(3, 3, seed=6)
    phi_upper = torch.tensor([0.2, 0.1, 0.3], dtype=torch.float64)
    parent_probability = torch.softmax(lower @ upper.T / phi_upper, dim=1)
    parents = torch.tensor([1, 0])
    keep = prototype_keep_probability(parent_probability, parents)
    for i, p in enumerate(parents.tolist()):
        for m in range(6):
            scores = [math.exp(float(lower[m] @ upper[u]) / float(phi_upper[u])) for u in range(3)]
            expected = min(max(1 - scores[p] / sum(scores), 1e-4), 0.999)
            assert keep[i, m].item() == pytest.approx(expected, rel=1e-6)


def proto_loss_loop(q, centroids, phi, labels, keep, masking="zero") -> float:
    """Official ``get_protos`` + CE, sample by sample: the positive, then every prototype that is no positive of
    the batch, each logit q.c / phi, deselected negatives zeroed (or dropped)."""
    batch_positives = set(labels.tolist())
    total = 0.0
    for i, a in enumerate(labels.tolist()):
        logits = [float(q[i] @ centroids[a]) / float(phi[a])]
        for m in range(centroids.shape[0]):
            if m in batch_positives:
                continue
            value = float(q[i] @ centroids[m]) / float(phi[m])
            if keep is not None and not keep[i, m]:
                if masking == "exclude":
                    continue
                value = 0.0
            logits.append(value)
        top = max(logits)
        total += -(logits[0] - top - math.log(sum(math.exp(v - top) for v in logits)))
    return total / len(labels)


@pytest.mark.parametrize("masking", ["zero", "exclude"])
def test_prototype_loss_matches_the_official_loop(masking: str) -> None:
    q, centroids = unit(4, 5, seed=7), unit(9, 5, seed=8)
    phi = torch.linspace(0.1, 0.3, 9, dtype=torch.float64)
    labels = torch.tensor([3, 3, 7, 1])
    keep = torch.rand(4, 9, generator=torch.Generator().manual_seed(0)) > 0.4
    candidates = prototype_candidates(labels, 9)
    logits = prototype_logits(q, centroids, phi, labels, candidates, keep, masking)
    loss = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    assert loss.item() == pytest.approx(proto_loss_loop(q, centroids, phi, labels, keep, masking), rel=1e-9)
    plain = F.cross_entropy(prototype_logits(q, centroids, phi, labels, candidates), torch.zeros(4, dtype=torch.long))
    assert plain.item() == pytest.approx(proto_loss_loop(q, centroids, phi, labels, None), rel=1e-9)


def test_instance_loss_gradient_check() -> None:
    q = unit(2, 3, seed=9).requires_grad_()
    k, queue = unit(2, 3, seed=10), unit(5, 3, seed=11)
    keep = torch.tensor([[1, 0, 1, 1, 0], [1, 1, 0, 1, 1]], dtype=torch.bool)
    target = torch.zeros(2, dtype=torch.long)
    assert torch.autograd.gradcheck(
        lambda x: F.cross_entropy(infonce_logits(x, k, queue, 0.2, keep), target), (q,))
