"""Transfer evaluations: the VOC07 SVM protocol (AP against a slow reference, cross-validated costs, difficult
images left out), the VOC layout reader, the cosine-with-restarts schedule of the Places205 protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from callbacks.evaluation.svm import average_precision, svm_transfer_map


def slow_ap(targets: np.ndarray, scores: np.ndarray) -> float:
    """The benchmark's get_precision_recall + calculate_ap, one element at a time."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    tp = fp = 0
    precision, recall = [], []
    for i in order:
        tp, fp = tp + (targets[i] > 0), fp + (targets[i] <= 0)
        precision.append(tp / (tp + fp))
        recall.append(tp / (targets > 0).sum())
    mrec, mpre = [0.0, *recall, 1.0], [0.0, *precision, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def test_average_precision_matches_the_benchmark_loop() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        targets = (rng.random(40) < 0.3).astype(int)
        scores = rng.standard_normal(40) + targets
        assert average_precision(targets, scores) == pytest.approx(slow_ap(targets, scores), abs=1e-12)
    assert average_precision(np.array([1, 0, 1]), np.array([3.0, 2.0, 1.0])) == pytest.approx((1 + 2 / 3) / 2)


def test_svms_separate_informative_features_and_ignore_difficult_test_images() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(90) % 3
    centres = torch.randn(3, 16, generator=g) * 3
    features = centres[labels] + torch.randn(90, 16, generator=g)
    targets = torch.nn.functional.one_hot(labels, 3)
    train, test = slice(0, 60), slice(60, 90)
    scores = svm_transfer_map(features[train], targets[train], features[test], targets[test], costs=[0.01, 1.0])
    assert scores["map"] > 0.95
    noise = svm_transfer_map(torch.randn(60, 16, generator=g), targets[train], torch.randn(30, 16, generator=g),
                             targets[test], costs=[0.01, 1.0])
    assert noise["map"] < 0.75
    hard = targets[test].clone()
    hard[:, 0] = torch.where(hard[:, 0] == 1, torch.tensor(-1), hard[:, 0])  # every positive of class 0 difficult
    assert np.isnan(svm_transfer_map(features[train], targets[train], features[test], hard, costs=[1.0])["ap_0"])


def test_the_voc_reader_maps_present_absent_difficult(tmp_path) -> None:
    from datamodules.synthetic import write_voc_layout
    from datamodules.voc import read_voc_split

    write_voc_layout(tmp_path, ["cat", "dog"], {"trainval": 10, "test": 4})
    files, labels = read_voc_split(tmp_path, "trainval", ["cat", "dog"])
    assert len(files) == 10 and labels.shape == (10, 2)
    assert labels[0].tolist() == [1, 0] and labels[1].tolist() == [0, 1] and labels[4].tolist() == [1, -1]


def test_cosine_restarts_restart_every_period() -> None:
    from lightning_modules.components.schedules import CosineRestarts

    rule = CosineRestarts(period=10)
    assert rule(0) == 1.0 and rule(5) == pytest.approx(0.5) and rule(10) == 1.0 and rule(19) < 0.03
