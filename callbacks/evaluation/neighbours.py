"""Nearest-neighbour evaluation on feature tensors: the weighted kNN classifier (InstDisc / DINO) and DCoDR's 1-NN
retrieval (DCoDR Sec. 4; docs/references.md, D5). Features arrive extracted; under DDP the kNN bank stays sharded
(``sharded_topk``: each rank searches its own part, the per-shard top-k are merged)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_modules.components.distributed import gather, world_size


@torch.no_grad()
def knn_predict(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores (Q, C) of the weighted kNN vote (InstDisc / DINO): cosine top-k, weights exp(sim / T).

    Queries are processed in chunks so the similarity matrix never exceeds ``chunk`` x N.
    """
    return knn_predict_many(bank, bank_labels, queries, num_classes, [k], temperature, chunk)[k]


@torch.no_grad()
def knn_predict_many(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    num_classes: int,
    ks: list[int],
    temperature: float = 0.07,
    chunk: int = 1024,
) -> dict[int, torch.Tensor]:
    """``{k: class scores}`` for several neighbourhood sizes from one similarity pass and one top-max(k) per chunk
    (the neighbours come sorted, so each smaller k takes the leading columns)."""
    bank, queries = F.normalize(bank.float(), dim=1), F.normalize(queries.float(), dim=1)
    widest = min(max(ks), bank.shape[0])
    scores = {k: torch.zeros(queries.shape[0], num_classes, device=queries.device) for k in ks}
    for start in range(0, queries.shape[0], chunk):
        sims, index = (queries[start:start + chunk] @ bank.T).topk(widest, dim=1)
        weights, labels = (sims / temperature).exp(), bank_labels[index]
        for k in ks:
            kept = min(k, widest)
            scores[k][start:start + chunk].scatter_add_(1, labels[:, :kept], weights[:, :kept])
    return scores


@torch.no_grad()
def normalise_rows(x: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Unit rows in ``x``'s own dtype, normalised in fp32 a chunk at a time (no fp32 copy of a half bank)."""
    out = torch.empty_like(x)
    for start in range(0, x.shape[0], chunk):
        out[start:start + chunk] = F.normalize(x[start:start + chunk].float(), dim=1).to(x.dtype)
    return out


@torch.no_grad()
def sharded_topk(bank_shard: torch.Tensor, shard_labels: torch.Tensor, queries: torch.Tensor, k: int,
                 chunk: int = 1024, bank_chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities and labels (Q, k) of every query's k nearest neighbours in the whole bank, sorted, when
    each rank holds one shard of it and every rank has the same ``queries``: each rank takes its shard's top-k,
    the (Q, k) candidates of all ranks are gathered and the best k kept. On one process: the bank's top-k.

    Memory per rank: the shard (and its normalised copy), the queries, one ``chunk`` x shard similarity block and
    ranks x Q x k candidates, instead of the whole bank on every rank. A bank smaller than k pads with
    similarity -inf (weight 0). A half-precision bank (``knn_bank_dtype``) stays half in memory: it is read in
    blocks of ``bank_chunk`` rows, each raised to fp32 for its similarities, and the blocks' top-k merged.
    """
    bank = normalise_rows(bank_shard) if bank_shard.dtype != torch.float32 else F.normalize(bank_shard, dim=1)
    queries = F.normalize(queries.float(), dim=1)
    count = queries.shape[0]
    sims = torch.full((count, k), float("-inf"), device=queries.device)
    labels = torch.zeros((count, k), dtype=torch.long, device=queries.device)
    bank_chunk = bank.shape[0] if bank.dtype == torch.float32 else bank_chunk
    for start in range(0, count, chunk):
        block_sims, block_labels = sims[start:start + chunk], labels[start:start + chunk]
        for row in range(0, bank.shape[0], bank_chunk):
            rows = bank[row:row + bank_chunk].float()
            top_sims, top_index = (queries[start:start + chunk] @ rows.T).topk(min(k, rows.shape[0]), dim=1)
            merged = torch.cat((block_sims, top_sims), dim=1)
            merged_labels = torch.cat((block_labels, shard_labels[row:row + bank_chunk][top_index]), dim=1)
            block_sims, where = merged.topk(k, dim=1)
            block_labels = merged_labels.gather(1, where)
        sims[start:start + chunk], labels[start:start + chunk] = block_sims, block_labels
    ranks = world_size()
    if ranks == 1:
        return sims, labels
    candidates = gather(sims).view(ranks, count, k).permute(1, 0, 2).reshape(count, ranks * k)
    candidate_labels = gather(labels).view(ranks, count, k).permute(1, 0, 2).reshape(count, ranks * k)
    best, where = candidates.topk(k, dim=1)
    return best, candidate_labels.gather(1, where)


def knn_vote(sims: torch.Tensor, labels: torch.Tensor, num_classes: int, ks: list[int],
             temperature: float = 0.07) -> dict[int, torch.Tensor]:
    """``{k: class scores (Q, C)}`` of the weighted vote exp(sim / T) of the first k of sorted neighbours."""
    weights = (sims / temperature).exp()  # exp(-inf) = 0 for padding
    scores = {}
    for k in ks:
        kept = min(k, sims.shape[1])
        scores[k] = torch.zeros(sims.shape[0], num_classes, device=sims.device).scatter_add_(
            1, labels[:, :kept], weights[:, :kept])
    return scores


def knn_memory_bytes(shard_rows: int, queries: int, dim: int, k: int, ranks: int, chunk: int = 1024,
                     bank_bytes: int = 4) -> int:
    """Peak bytes ``sharded_topk`` holds on one rank: the shard and its normalised copy (``bank_bytes`` an element:
    4 fp32, 2 half), the gathered queries and their normalised copy, one fp32 similarity block (a half bank: one
    block of 65,536 rows raised to fp32 as well), and the gathered candidates (float + long)."""
    rows = shard_rows if bank_bytes == 4 else min(65536, shard_rows)
    block = 4 * min(chunk, queries) * rows + (0 if bank_bytes == 4 else 4 * rows * dim)
    return bank_bytes * 2 * shard_rows * dim + 4 * 2 * queries * dim + block + 12 * ranks * queries * k


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, topk: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose label is among the k best scores, for each k."""
    ranked = scores.argsort(dim=1, descending=True)
    return {k: float((ranked[:, :k] == labels[:, None]).any(1).float().mean()) for k in topk}


@torch.no_grad()
def nearest_other(queries: torch.Tensor, query_index: torch.Tensor, database: torch.Tensor,
                  chunk: int = 2048) -> torch.Tensor:
    """For each query (the row of ``database`` at ``query_index``), the index of its nearest other row by L2."""
    nearest = []
    for start in range(0, queries.shape[0], chunk):
        q = queries[start:start + chunk]
        distances = torch.cdist(q.float(), database.float())
        own = query_index[start:start + chunk]
        distances[torch.arange(q.shape[0], device=q.device), own] = float("inf")  # never retrieve itself
        nearest.append(distances.argmin(1))
    return torch.cat(nearest) if nearest else query_index.new_zeros(0)


@torch.no_grad()
def retrieval_top1(queries: torch.Tensor, query_index: torch.Tensor, database: torch.Tensor,
                   labels: dict[str, torch.Tensor], chunk: int = 2048) -> dict[str, float]:
    """For each query, its nearest other row of ``database`` by L2; the fraction whose neighbour has exactly the
    query's label, for each label (DCoDR retrieval: test images against train + test)."""
    nearest = nearest_other(queries, query_index, database, chunk)
    count = max(1, queries.shape[0])
    return {name: float((values[nearest] == values[query_index]).sum()) / count for name, values in labels.items()}


@torch.no_grad()
def tolerant_retrieval_top1(queries: torch.Tensor, query_index: torch.Tensor, database: torch.Tensor,
                            factors: dict[str, torch.Tensor], levels: dict[str, int], tolerance: dict[str, int],
                            cyclic: set[str], chunk: int = 2048) -> dict[str, float]:
    """DCoDR's retrieval score (``retrieval_utils.check_match``): the nearest other row matches a factor when the
    two values differ by at most ``tolerance[factor]`` steps (0 when absent), measured around the circle for a
    ``cyclic`` factor of ``levels[factor]`` values (SmallNORB's azimuth: 2); ``all``: every factor matches."""
    nearest = nearest_other(queries, query_index, database, chunk)
    count = max(1, queries.shape[0])
    joint = torch.ones(queries.shape[0], dtype=torch.bool, device=queries.device)
    scores = {}
    for name, values in factors.items():
        distance = (values[nearest] - values[query_index]).abs()
        if name in cyclic:
            distance = torch.minimum(distance, levels[name] - distance)
        match = distance <= tolerance.get(name, 0)
        joint &= match
        scores[name] = float(match.sum()) / count
    scores["all"] = float(joint.sum()) / count
    return scores
