"""Linear SVMs on frozen features, the VOC07 transfer protocol (Goyal et al. 2019, the benchmark MoCo, PCL and HCSC
report): features L2-normalised; per class a LinearSVC (squared hinge, L2, class weight 2 on positives, tol 1e-4, up
to 2,000 iterations); its cost chosen by 3-fold cross-validated average precision on trainval among the cost list;
the chosen SVM refitted on all of trainval and scored by average precision on test, difficult images left out;
mAP = the mean over classes. AP is the area under the precision-recall curve with precision made monotone (the
benchmark's ``calculate_ap``), not the 11-point VOC approximation.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_score
from sklearn.svm import LinearSVC

# The benchmark's costs: 1e-7 ... 100 and 0.5^4 ... 0.5^19.
DEFAULT_COSTS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, *(0.5 ** n for n in range(4, 20)))


def average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve of ``scores`` for binary ``targets``, precision made monotone."""
    order = np.argsort(-scores, kind="stable")
    hits = targets[order] > 0
    if not hits.any():
        return float("nan")
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    precision, recall = tp / (tp + fp), tp / hits.sum()
    precision = np.concatenate(([0.0], precision, [0.0]))
    recall = np.concatenate(([0.0], recall, [1.0]))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone: the best precision at any higher recall
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(((recall[steps] - recall[steps - 1]) * precision[steps]).sum())


def _svm(cost: float, seed: int) -> LinearSVC:
    return LinearSVC(C=cost, class_weight={1: 2, -1: 1}, intercept_scaling=1.0, penalty="l2", loss="squared_hinge",
                     tol=1e-4, dual=True, max_iter=2000, random_state=seed)


def svm_transfer_map(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                     costs: Sequence[float] = DEFAULT_COSTS, folds: int = 3, seed: int = 0) -> dict[str, float]:
    """Per-class test AP and their mean (``map``) of SVMs chosen by cross-validation; labels (N, C) in
    {1 present, 0 absent, -1 difficult}: difficult images are negatives in training and left out of the test."""
    normalise = lambda x: (x / (x.norm(dim=1, keepdim=True) + 1e-5)).double().cpu().numpy()  # noqa: E731
    train, test = normalise(train_x.float()), normalise(test_x.float())
    train_y, test_y = train_y.cpu().numpy(), test_y.cpu().numpy()
    scores: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # small costs stop at max_iter, as in the benchmark
        for c in range(train_y.shape[1]):
            target = np.where(train_y[:, c] == 1, 1, -1)
            cv_ap = [cross_val_score(_svm(cost, seed), train, target, cv=folds, scoring="average_precision").mean()
                     for cost in costs]
            best = costs[int(np.argmax(cv_ap))]
            svm = _svm(best, seed).fit(train, target)
            kept = test_y[:, c] != -1
            scores[f"ap_{c}"] = average_precision(test_y[kept, c], svm.decision_function(test[kept]))
    per_class = [v for v in scores.values() if not np.isnan(v)]
    scores["map"] = float(np.mean(per_class)) if per_class else float("nan")
    return scores
