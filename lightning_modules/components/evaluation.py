"""Representation evaluation on feature tensors: weighted kNN, a linear probe, clustering quality.

All functions take features already extracted (and gathered across ranks where the caller needs the whole set).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torchmetrics.functional.clustering import adjusted_mutual_info_score, normalized_mutual_info_score


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


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float = 0.1,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> dict[str, float]:
    """Logistic regression on frozen features (L2-normalised, then standardised with the training statistics):
    SGD with momentum, cosine schedule, zero initialisation.

    Cheap on cached features, so it runs at the end of every pretraining; the paper's ImageNet protocol
    (augmented images through the frozen trunk) is ``lightning_modules.linear_probe.LinearProbe``.
    """
    generator = torch.Generator().manual_seed(seed)
    # Lightning's test loop runs under inference mode: leave it, and clone the inference tensors out of it.
    with torch.inference_mode(False), torch.enable_grad():
        train_x, test_x = F.normalize(train_x.float().clone(), dim=1), F.normalize(test_x.float().clone(), dim=1)
        mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
        train_y, test_y = train_y.clone(), test_y.clone()
        classifier = torch.nn.Linear(train_x.shape[1], num_classes).to(train_x.device)
        torch.nn.init.zeros_(classifier.weight)  # a convex problem: zero start, no draw from the global RNG
        torch.nn.init.zeros_(classifier.bias)
        optimizer = torch.optim.SGD(classifier.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
        steps = epochs * max(1, -(-train_x.shape[0] // batch_size))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        for _ in range(epochs):
            order = torch.randperm(train_x.shape[0], generator=generator).to(train_x.device)
            for start in range(0, train_x.shape[0], batch_size):
                index = order[start:start + batch_size]
                loss = F.cross_entropy(classifier(train_x[index]), train_y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
        with torch.no_grad():
            accuracy = topk_accuracy(classifier(test_x), test_y, (1, 5))
    return {"top1": accuracy[1], "top5": accuracy[5]}


def cluster_accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy under the best one-to-one mapping of clusters to classes (Hungarian matching)."""
    predicted, labels = predicted.cpu().numpy(), labels.cpu().numpy()
    size = max(predicted.max(), labels.max()) + 1
    counts = np.zeros((size, size), dtype=np.int64)
    np.add.at(counts, (predicted, labels), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / len(labels))


def clustering_scores(predicted: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """NMI and AMI (torchmetrics) and Hungarian-matched accuracy of a clustering against class labels."""
    predicted, labels = predicted.long().cpu(), labels.long().cpu()
    with warnings.catch_warnings():  # torchmetrics builds a sparse contingency table and warns about it
        warnings.simplefilter("ignore", UserWarning)
        return {
            "nmi": float(normalized_mutual_info_score(predicted, labels)),
            "ami": float(adjusted_mutual_info_score(predicted, labels)),
            "acc": cluster_accuracy(predicted, labels),
        }
