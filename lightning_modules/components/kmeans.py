"""Spherical k-means in PyTorch, on the accelerator and across ranks (HCSC's E-step; spec Sec. 2).

Every rank holds its own shard of the features. Initial centroids are rows picked by a seeded generator over
the *global* index (each rank contributes the rows it owns, one all-reduce); each iteration assigns the local
shard (chunked matmul + argmax) and all-reduces the per-cluster sums and counts. No rank idles while another
clusters, nothing but K x D sums crosses the network, and the result is a function of the seed. Empty clusters
are re-seeded by splitting the largest clusters (as faiss does), decided from the all-reduced counts, so every
rank takes the same decision without further communication.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lightning_modules.components.distributed import all_reduce_sum, gather, rank


@dataclass
class KMeansResult:
    centroids: torch.Tensor  # (K, D), unit norm
    assignments: torch.Tensor  # (n_local,), long
    counts: torch.Tensor  # (K,), global member counts
    sums: torch.Tensor  # (K, D), global member sums (unnormalised means = sums / counts)
    inertia: float  # sum over all points of 1 - cos(x, its centroid)


def _assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid by cosine similarity, in chunks of rows to bound memory: (index, similarity)."""
    index = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    similarity = torch.empty(x.shape[0], dtype=centroids.dtype, device=x.device)
    for start in range(0, x.shape[0], chunk):
        sims = x[start:start + chunk] @ centroids.T
        similarity[start:start + chunk], index[start:start + chunk] = sims.max(dim=1)
    return index, similarity


def _global_offsets(n_local: int, device: torch.device) -> tuple[int, int]:
    sizes = gather(torch.tensor([n_local], device=device)).tolist()
    return sum(sizes[: rank()]), sum(sizes)


def _split_largest(centroids: torch.Tensor, counts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Give each empty cluster half of one of the largest clusters: both centroids move apart by a small step."""
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel() == 0:
        return centroids
    donors = torch.argsort(counts, descending=True)[: empty.numel()]
    noise = torch.randn(empty.numel(), centroids.shape[1], generator=generator).to(centroids)
    step = 1e-3 * F.normalize(noise, dim=1)
    centroids = centroids.clone()
    centroids[empty] = F.normalize(centroids[donors] + step, dim=1)
    centroids[donors] = F.normalize(centroids[donors] - step, dim=1)
    return centroids


@torch.no_grad()
def spherical_kmeans(
    x: torch.Tensor,
    k: int,
    iterations: int = 20,
    restarts: int = 1,
    seed: int = 0,
    chunk: int = 65536,
    distributed: bool = True,
) -> KMeansResult:
    """Cluster unit vectors ``x`` (this rank's shard, (n, D)) into ``k`` spherical clusters.

    With ``distributed`` the shards of all ranks form one data set (rank order); the best of ``restarts``
    runs by inertia is kept (faiss ``nredo``).
    """
    x = F.normalize(x.float(), dim=1)
    offset, total = _global_offsets(x.shape[0], x.device) if distributed else (0, x.shape[0])
    if k > total:
        raise ValueError(f"cannot make {k} clusters from {total} points; lower the number of clusters")
    reduce = all_reduce_sum if distributed else (lambda t: t)
    best: KMeansResult | None = None
    for restart in range(restarts):
        generator = torch.Generator().manual_seed(seed * 1009 + restart)
        chosen = torch.randperm(total, generator=generator)[:k].to(x.device)
        local = (chosen >= offset) & (chosen < offset + x.shape[0])
        centroids = torch.zeros(k, x.shape[1], device=x.device)
        centroids[local] = x[chosen[local] - offset]
        centroids = reduce(centroids)
        for _ in range(iterations):
            assignments, _ = _assign(x, centroids, chunk)
            sums = reduce(torch.zeros_like(centroids).index_add_(0, assignments, x))
            counts = reduce(torch.bincount(assignments, minlength=k).float())
            updated = F.normalize(sums, dim=1)
            centroids = torch.where(counts[:, None] > 0, updated, centroids)
            centroids = _split_largest(centroids, counts, generator)
        assignments, similarity = _assign(x, centroids, chunk)
        sums = reduce(torch.zeros_like(centroids).index_add_(0, assignments, x))
        counts = reduce(torch.bincount(assignments, minlength=k).float())
        inertia = float(reduce((1 - similarity).sum().reshape(1)).item())
        if best is None or inertia < best.inertia:
            best = KMeansResult(centroids, assignments, counts, sums, inertia)
    assert best is not None
    return best


@torch.no_grad()
def concentration(
    x: torch.Tensor, result: KMeansResult, temperature: float, distributed: bool = True
) -> torch.Tensor:
    """Per-cluster concentration phi (PCL / HCSC): mean member distance / log(n + 10), rescaled to mean ``temperature``.

    Distances are Euclidean to the members' (unnormalised) mean, as faiss measures them to its centroid;
    singletons and empty clusters take the level's largest value; phi is clipped to its 10th-90th percentiles.
    """
    x = F.normalize(x.float(), dim=1)
    counts = result.counts
    means = result.sums / counts.clamp_min(1)[:, None]
    distance = (x - means[result.assignments]).pow(2).sum(1).clamp_min(0).sqrt()
    total = torch.zeros_like(counts).index_add_(0, result.assignments, distance)
    if distributed:
        all_reduce_sum(total)
    phi = total / counts.clamp_min(1) / torch.log(counts + 10)
    populated = counts > 1
    phi = torch.where(populated, phi, phi[populated].max() if populated.any() else torch.ones_like(phi))
    low, high = torch.quantile(phi, 0.1), torch.quantile(phi, 0.9)
    phi = phi.clamp(low, high)
    return temperature * phi / phi.mean()


@dataclass
class HierarchyLevel:
    centroids: torch.Tensor  # (K_l, D)
    concentration: torch.Tensor  # (K_l,)
    assignments: torch.Tensor  # level-l cluster of every local sample, (n_local,)
    parent: torch.Tensor | None  # (K_l,) index of the level l+1 cluster of each level-l cluster; None at the top


@torch.no_grad()
def hierarchical_kmeans(
    x: torch.Tensor,
    num_clusters: list[int],
    temperature: float = 0.2,
    iterations: int = 20,
    restarts: int = 1,
    seed: int = 0,
    chunk: int = 65536,
    distributed: bool = True,
) -> list[HierarchyLevel]:
    """HCSC's bottom-up hierarchy: k-means on the samples, then on the normalised centroids of the level below.

    Only the first level touches the (sharded) samples; the upper levels cluster a few thousand centroids that
    every rank holds identically, so they run replicated without communication. Level l uses seed ``seed + l``
    (the official per-level faiss seeds 0, 1, 2). Sample labels are composed through the parents, so every
    sample has a consistent path up the hierarchy.
    """
    if sorted(num_clusters, reverse=True) != list(num_clusters):
        raise ValueError(f"cluster counts must decrease up the hierarchy, got {num_clusters}")
    levels: list[HierarchyLevel] = []
    points, assignments = x, None
    for level, k in enumerate(num_clusters):
        on_samples = level == 0
        result = spherical_kmeans(points, k, iterations, restarts, seed + level, chunk, distributed and on_samples)
        phi = concentration(points, result, temperature, distributed and on_samples)
        if on_samples:
            assignments = result.assignments
        else:
            levels[-1].parent = result.assignments
            assignments = result.assignments[assignments]
        levels.append(HierarchyLevel(result.centroids, phi, assignments, None))
        points = result.centroids
    return levels

