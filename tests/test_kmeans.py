"""Spherical k-means, concentrations and the hierarchy against references (a loop, scikit-learn, formulas)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from callbacks.evaluation.clustering import clustering_scores
from lightning_modules.components.kmeans import concentration, hierarchical_kmeans, spherical_kmeans


def blobs(n_per: int, centres: int, dim: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = F.normalize(torch.randn(centres, dim, generator=g), dim=1)
    labels = torch.arange(centres).repeat_interleave(n_per)
    points = F.normalize(means[labels] + spread * torch.randn(len(labels), dim, generator=g), dim=1)
    return points, labels


def kmeans_loop(x: torch.Tensor, k: int, iterations: int, seed: int) -> tuple[torch.Tensor, list[int]]:
    """Lloyd's spherical k-means written plainly: the same seeded initial rows, point-by-point assignment."""
    chosen = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed * 1009))[:k]
    centroids = x[chosen].clone()

    def assign() -> list[int]:
        return [max(range(k), key=lambda c: float(x[i] @ centroids[c])) for i in range(x.shape[0])]

    for _ in range(iterations):
        assignments = assign()
        for c in range(k):
            members = [x[i] for i in range(x.shape[0]) if assignments[i] == c]
            if members:
                centroids[c] = F.normalize(torch.stack(members).sum(0), dim=0)
    return centroids, assign()


def test_matches_the_plain_loop() -> None:
    x, _ = blobs(30, 4, 8, 0.5, seed=0)
    result = spherical_kmeans(x, 4, iterations=10, seed=3, distributed=False, chunk=17)
    centroids, assignments = kmeans_loop(x, 4, 10, seed=3)
    assert result.assignments.tolist() == assignments
    assert torch.allclose(result.centroids, centroids, atol=1e-5)
    assert result.counts.sum() == 120 and torch.allclose(result.centroids.norm(dim=1), torch.ones(4))


def test_recovers_separated_clusters_like_scikit_learn() -> None:
    sklearn = pytest.importorskip("sklearn.cluster")
    x, labels = blobs(50, 5, 16, 0.08, seed=1)
    ours = spherical_kmeans(x, 5, iterations=30, restarts=5, seed=0, distributed=False)
    theirs = sklearn.KMeans(5, n_init=5, random_state=0).fit(x.numpy())
    assert clustering_scores(torch.from_numpy(theirs.labels_), labels)["nmi"] == pytest.approx(1.0)
    assert clustering_scores(ours.assignments, labels)["nmi"] == pytest.approx(1.0)
    assert clustering_scores(ours.assignments, torch.from_numpy(theirs.labels_))["acc"] == pytest.approx(1.0)


def test_is_deterministic_for_a_seed_and_keeps_the_best_restart() -> None:
    x, _ = blobs(40, 6, 8, 0.8, seed=2)
    a = spherical_kmeans(x, 6, iterations=5, restarts=1, seed=11, distributed=False)
    b = spherical_kmeans(x, 6, iterations=5, restarts=1, seed=11, distributed=False)
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.assignments, b.assignments)
    best = spherical_kmeans(x, 6, iterations=5, restarts=4, seed=11, distributed=False)
    assert best.inertia <= a.inertia + 1e-6


def test_empty_clusters_are_reseeded_without_nans() -> None:
    # Many points at two locations and a few elsewhere: random initial rows repeat, clusters empty out.
    x = F.normalize(torch.cat([torch.tensor([[1.0, 0, 0]]).repeat(50, 1), torch.tensor([[0, 1.0, 0]]).repeat(50, 1),
                               torch.randn(6, 3, generator=torch.Generator().manual_seed(0))]), dim=1)
    result = spherical_kmeans(x, 8, iterations=10, seed=0, distributed=False)
    assert torch.isfinite(result.centroids).all()
    assert torch.allclose(result.centroids.norm(dim=1), torch.ones(8), atol=1e-5)
    assert (result.counts > 0).sum() >= 4


def test_too_many_clusters_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cannot make"):
        spherical_kmeans(torch.randn(5, 3), 6, distributed=False)


def test_concentration_matches_the_pcl_formula() -> None:
    x, _ = blobs(20, 3, 6, 0.6, seed=4)
    x = torch.cat([x, F.normalize(torch.tensor([[5.0, 0, 0, 0, 0, 1]]), dim=1)])  # may form a singleton
    result = spherical_kmeans(x, 4, iterations=10, seed=0, distributed=False)
    phi = concentration(x, result, temperature=0.2, distributed=False)
    raw = []
    for c in range(4):
        members = x[result.assignments == c]
        if len(members) > 1:
            mean = members.mean(0)
            raw.append(float((members - mean).norm(dim=1).mean()) / math.log(len(members) + 10))
        else:
            raw.append(None)
    top = max(v for v in raw if v is not None)
    raw = torch.tensor([top if v is None else v for v in raw])
    raw = raw.clamp(torch.quantile(raw, 0.1), torch.quantile(raw, 0.9))
    assert torch.allclose(phi, 0.2 * raw / raw.mean(), atol=1e-5)
    assert phi.mean().item() == pytest.approx(0.2)


def test_hierarchy_paths_are_consistent() -> None:
    x, _ = blobs(25, 8, 8, 0.4, seed=5)
    levels = hierarchical_kmeans(x, [8, 4, 2], iterations=10, distributed=False)
    assert [lvl.centroids.shape[0] for lvl in levels] == [8, 4, 2]
    for lower, upper in zip(levels, levels[1:]):
        assert torch.equal(upper.assignments, lower.parent[lower.assignments])
    assert levels[-1].parent is None
    with pytest.raises(ValueError, match="decrease"):
        hierarchical_kmeans(x, [4, 8], distributed=False)


def l2_kmeans_loop(x: torch.Tensor, k: int, iterations: int, seed: int) -> tuple[torch.Tensor, list[int], list[float]]:
    """faiss' L2 k-means written plainly: seeded initial rows, raw means as centroids, nearest raw centroid by L2,
    and the squared distances to the final raw centroids (what the official code turns into phi)."""
    chosen = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed * 1009))[:k]
    centroids = x[chosen].clone()

    def assign() -> list[int]:
        return [min(range(k), key=lambda c: float((x[i] - centroids[c]).pow(2).sum())) for i in range(x.shape[0])]

    for _ in range(iterations):
        assignments = assign()
        for c in range(k):
            members = [x[i] for i in range(x.shape[0]) if assignments[i] == c]
            if members:
                centroids[c] = torch.stack(members).mean(0)
    assignments = assign()
    distances = [float((x[i] - centroids[assignments[i]]).pow(2).sum()) for i in range(x.shape[0])]
    return centroids, assignments, distances


def test_euclidean_kmeans_and_phi_follow_the_official_faiss_rule() -> None:
    from lightning_modules.components.kmeans import kmeans

    x, _ = blobs(30, 4, 8, 0.9, seed=6)
    result = kmeans(x, 4, iterations=10, seed=2, distributed=False, chunk=13, metric="euclidean")
    centroids, assignments, distances = l2_kmeans_loop(x, 4, 10, seed=2)
    assert result.assignments.tolist() == assignments
    assert torch.allclose(result.raw_centroids, centroids, atol=1e-5)
    assert torch.allclose(result.centroids, F.normalize(centroids, dim=1), atol=1e-5)
    assert result.inertia == pytest.approx(sum(distances), rel=1e-4)
    phi = concentration(x, result, temperature=0.2, distributed=False)
    raw = []
    for c in range(4):
        member = [math.sqrt(d) for d, a in zip(distances, assignments) if a == c]
        raw.append(sum(member) / len(member) / math.log(len(member) + 10) if len(member) > 1 else None)
    top = max(v for v in raw if v is not None)
    raw = torch.tensor([top if v is None else v for v in raw])
    raw = raw.clamp(torch.quantile(raw, 0.1), torch.quantile(raw, 0.9))
    assert torch.allclose(phi, 0.2 * raw / raw.mean(), atol=1e-5)


def test_the_two_metrics_assign_differently_when_centroids_are_not_unit() -> None:
    """Raw L2 centroids of different norms: nearest by L2 is not nearest by cosine (the official rule is L2)."""
    from lightning_modules.components.kmeans import _assign

    centroids = torch.tensor([[0.9, 0.0], [0.3, 0.3]])
    x = F.normalize(torch.tensor([[1.0, 0.6]]), dim=1)
    by_l2, _ = _assign(x, centroids, 4, -0.5 * centroids.pow(2).sum(1))
    by_cosine, _ = _assign(x, F.normalize(centroids, dim=1), 4)
    assert by_l2.item() == 0 and by_cosine.item() == 1


def test_the_convergence_stop_uses_fewer_iterations_at_equal_quality() -> None:
    from lightning_modules.components.kmeans import kmeans

    x, _ = blobs(200, 10, 16, 0.3, seed=7)
    fixed = kmeans(x, 10, iterations=50, seed=1, distributed=False)
    early = kmeans(x, 10, iterations=50, seed=1, distributed=False, tol=1e-6)
    assert fixed.iterations == 50 and early.iterations < 50
    assert early.inertia == pytest.approx(fixed.inertia, rel=1e-4)
