"""Nearest-neighbour evaluation on feature tensors: the weighted kNN classifier (InstDisc / DINO) and DCoDR's 1-NN
retrieval (DCoDR Sec. 4; docs/references.md, D5). Features arrive extracted (and gathered across ranks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, topk: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose label is among the k best scores, for each k."""
    ranked = scores.argsort(dim=1, descending=True)
    return {k: float((ranked[:, :k] == labels[:, None]).any(1).float().mean()) for k in topk}


@torch.no_grad()
def retrieval_top1(queries: torch.Tensor, query_index: torch.Tensor, database: torch.Tensor,
                   labels: dict[str, torch.Tensor], chunk: int = 2048) -> dict[str, float]:
    """For each query (a row of ``database`` at ``query_index``), its nearest neighbour by L2 among all other rows;
    the fraction whose neighbour shares each label (DCoDR retrieval: test images against train + test)."""
    hits = {name: 0 for name in labels}
    for start in range(0, queries.shape[0], chunk):
        q = queries[start:start + chunk]
        distances = torch.cdist(q.float(), database.float())
        own = query_index[start:start + chunk]
        distances[torch.arange(q.shape[0], device=q.device), own] = float("inf")  # never retrieve itself
        nearest = distances.argmin(1)
        for name, values in labels.items():
            hits[name] += int((values[nearest] == values[own]).sum())
    return {name: count / max(1, queries.shape[0]) for name, count in hits.items()}
