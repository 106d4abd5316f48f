"""Clustering quality against class labels: NMI and AMI (torchmetrics) and Hungarian-matched accuracy."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchmetrics.functional.clustering import adjusted_mutual_info_score, normalized_mutual_info_score


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
