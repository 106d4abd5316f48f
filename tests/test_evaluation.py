"""Evaluation on frozen features: weighted kNN, Hungarian accuracy, linear / MLP probes (classification and
regression), 1-NN retrieval, each against a slow reference written here or a case with a known answer."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from callbacks.disentanglement import DisentanglementProbes
from callbacks.evaluation.clustering import cluster_accuracy
from callbacks.evaluation.logistic import logistic_regression_probe
from callbacks.evaluation.neighbours import knn_predict, retrieval_top1
from callbacks.evaluation.probes import median_predictor_l1, mlp_probe, mlp_regression_probe, ridge_regression_l1
from datamodules.domains import DomainDataModule, DomainFolderSource, NpzSource


def blobs(n: int, classes: int, dim: int, seed: int, spread: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(100))
    labels = torch.arange(n) % classes
    return centres[labels] + spread * torch.randn(n, dim, generator=generator), labels


def test_weighted_knn_matches_a_slow_vote() -> None:
    bank, bank_labels = blobs(60, 4, 8, seed=0, spread=2.0)
    queries, _ = blobs(13, 4, 8, seed=1, spread=2.0)
    scores = knn_predict(bank, bank_labels, queries, num_classes=4, k=5, temperature=0.1, chunk=4)
    for q in range(queries.shape[0]):
        sims = [float(torch.dot(queries[q], b) / (queries[q].norm() * b.norm())) for b in bank]
        nearest = sorted(range(len(sims)), key=lambda i: -sims[i])[:5]
        expected = [0.0] * 4
        for i in nearest:
            expected[int(bank_labels[i])] += math.exp(sims[i] / 0.1)
        assert scores[q].tolist() == pytest.approx(expected, rel=1e-4)


def test_cluster_accuracy_is_the_best_permutation() -> None:
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 4, (50,), generator=generator)
    predicted = torch.randint(0, 4, (50,), generator=generator)
    best = max(float((torch.tensor(p)[predicted] == labels).float().mean()) for p in itertools.permutations(range(4)))
    assert cluster_accuracy(predicted, labels) == pytest.approx(best)
    assert cluster_accuracy((labels + 1) % 4, labels) == 1.0


def test_classification_probes_separate_blobs_and_stay_near_chance_on_noise() -> None:
    train_x, train_y = blobs(400, 4, 16, seed=0)
    test_x, test_y = blobs(100, 4, 16, seed=1)
    assert mlp_probe(train_x, train_y, test_x, test_y, 4, epochs=20) > 0.95
    assert logistic_regression_probe(train_x, train_y, test_x, test_y, 4, epochs=20)["top1"] > 0.95
    noise = torch.randint(0, 4, (400,), generator=torch.Generator().manual_seed(5))
    assert mlp_probe(train_x, noise, test_x, test_y, 4, epochs=20) < 0.5
    # Deterministic for a seed, and it leaves the global RNG alone.
    state = torch.random.get_rng_state()
    assert mlp_probe(train_x, noise, test_x, test_y, 4, epochs=3) == mlp_probe(train_x, noise, test_x, test_y, 4,
                                                                             epochs=3)
    assert torch.equal(state, torch.random.get_rng_state())


def test_regression_probes_recover_a_linear_target_in_its_own_units() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(600, 12, generator=generator)
    weights = torch.randn(12, 3, generator=generator)
    # Landmark-like targets: pixel units around 32, a function of the code's direction (codes are normalised).
    y = 32 + 8 * torch.nn.functional.normalize(x, dim=1) @ weights
    baseline = median_predictor_l1(y[:500], y[500:])
    reference = float((y[500:] - y[:500].median(0).values).abs().mean())
    assert baseline == pytest.approx(reference)
    ridge = ridge_regression_l1(x[:500], y[:500], x[500:], y[500:])
    mlp = mlp_regression_probe(x[:500], y[:500], x[500:], y[500:], epochs=60)
    assert ridge < 0.05 * baseline and mlp < 0.5 * baseline
    # Closed form against NumPy's ridge normal equations on the same standardised design (ridge 1e-3 x N).
    xs = torch.nn.functional.normalize(x.double(), dim=1).numpy()
    mean, std = xs[:500].mean(0), xs[:500].std(0, ddof=1)
    design = np.c_[(xs - mean) / std, np.ones(600)]
    gram = design[:500].T @ design[:500] + 1e-3 * 500 * np.eye(13)
    solution = np.linalg.solve(gram, design[:500].T @ y[:500].double().numpy())
    expected = np.abs(design[500:] @ solution - y[500:].double().numpy()).mean()
    assert ridge == pytest.approx(expected, rel=1e-6)
    # A single-column target and a target unrelated to the codes (no better than the median).
    single = ridge_regression_l1(x[:500], y[:500, 0], x[500:], y[500:, 0])
    assert single < 0.05 * median_predictor_l1(y[:500, 0], y[500:, 0])
    noise = torch.randn(600, generator=torch.Generator().manual_seed(9))
    assert ridge_regression_l1(x[:500], noise[:500], x[500:], noise[500:]) > 0.9 * median_predictor_l1(
        noise[:500], noise[500:])


def test_retrieval_matches_brute_force_and_never_returns_the_query() -> None:
    database, _ = blobs(40, 3, 5, seed=2, spread=1.5)
    labels = {"a": torch.arange(40) % 3, "b": torch.arange(40) % 2}
    index = torch.arange(30, 40)
    ours = retrieval_top1(database[index], index, database, labels, chunk=3)
    for name, values in labels.items():
        hits = 0
        for q in index.tolist():
            distances = [(float((database[q] - database[j]).norm()), j) for j in range(40) if j != q]
            hits += int(values[min(distances)[1]] == values[q])
        assert ours[name] == pytest.approx(hits / 10)
    duplicated = torch.cat((database, database[:1]))  # a query's exact copy elsewhere is a fair neighbour
    assert retrieval_top1(duplicated[:1], torch.tensor([0]), duplicated, {"id": torch.arange(41) % 40})["id"] == 1


def test_tolerant_retrieval_matches_the_official_check_match_loop() -> None:
    from callbacks.evaluation.neighbours import tolerant_retrieval_top1

    database, _ = blobs(50, 4, 6, seed=3, spread=2.0)
    g = torch.Generator().manual_seed(0)
    factors = {"azimuth": torch.randint(0, 18, (50,), generator=g), "lighting": torch.randint(0, 6, (50,), generator=g)}
    levels, tolerance = {"azimuth": 18, "lighting": 6}, {"azimuth": 2}
    index = torch.arange(35, 50)
    ours = tolerant_retrieval_top1(database[index], index, database, factors, levels, tolerance, {"azimuth"}, chunk=4)
    hits = {"azimuth": 0, "lighting": 0, "all": 0}
    for q in index.tolist():  # DCoDR retrieval_utils.check_match, one query at a time
        distances = [(float((database[q] - database[j]).norm()), j) for j in range(50) if j != q]
        n = min(distances)[1]
        matched = True
        for name, values in factors.items():
            diff = abs(int(values[q]) - int(values[n]))
            dist = min(diff, levels[name] - diff) if name == "azimuth" else diff
            ok = dist <= tolerance.get(name, 0)
            hits[name] += ok
            matched &= ok
        hits["all"] += matched
    assert ours == pytest.approx({k: v / 15 for k, v in hits.items()})
    exact = retrieval_top1(database[index], index, database, factors)
    assert ours["azimuth"] >= exact["azimuth"] and ours["lighting"] == pytest.approx(exact["lighting"])


def test_continuous_factors_load_and_are_probed_by_regression(tmp_path) -> None:
    rng = np.random.default_rng(0)
    n = 80
    landmarks = rng.uniform(0, 64, (n, 136)).astype(np.float32)
    path = tmp_path / "celeba.npz"
    np.savez(path, imgs=rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8), classes=np.arange(n) % 4,
             landmarks=landmarks)
    with pytest.raises(KeyError, match="pose"):
        NpzSource(str(path), continuous_keys=["pose"]).load()
    dm = DomainDataModule(NpzSource(str(path), continuous_keys=["landmarks"], size=16), domains_per_batch=2,
                          per_domain=4, num_workers=0, test_fraction=0.25)
    assert dm.continuous_factors == ["landmarks"] and dm.factor_levels == {}
    batch = next(iter(dm.test_dataloader()))
    assert batch["factors"]["landmarks"].shape == (batch["image"].shape[0], 136)
    index = dm.test_index[: batch["image"].shape[0]]
    assert torch.allclose(batch["factors"]["landmarks"].float(), torch.from_numpy(landmarks[index]))

    codes = torch.from_numpy(landmarks[:, :8]).float()  # codes that carry part of the target
    probes = DisentanglementProbes(mlp_epochs=5, linear_epochs=5)
    targets = {"domain": torch.arange(n) % 4, "landmarks": torch.from_numpy(landmarks)}
    metrics = probes.evaluate(codes[:60], {k: v[:60] for k, v in targets.items()}, codes[60:],
                              {k: v[60:] for k, v in targets.items()}, {"domain": 4})
    assert {"test/landmarks_l1", "test/landmarks_linear_l1", "test/landmarks_l1_baseline",
            "test/retrieval_domain_top1"} <= set(metrics)
    assert "test/retrieval_landmarks_top1" not in metrics and "test/landmarks_acc" not in metrics
    assert metrics["test/landmarks_linear_l1"] < metrics["test/landmarks_l1_baseline"]


def test_folder_table_columns_are_typed(tmp_path) -> None:
    from PIL import Image

    rows = ["path,pose,material,yaw"]
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8)).save(tmp_path / d / f"{i}.png")
            rows.append(f"{d}/{i}.png,{i},{['wood', 'metal'][i % 2]},{i * 0.5 - 0.25}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    data = DomainFolderSource(str(tmp_path), factors_csv=str(tmp_path / "labels.csv"), size=8).load()
    assert data.factor_levels == {"pose": 3, "material": 2}
    assert data.continuous["yaw"].dtype == np.float32 and data.continuous["yaw"].tolist()[:3] == [-0.25, 0.25, 0.75]


def test_one_knn_pass_serves_every_k_like_separate_passes() -> None:
    from callbacks.evaluation.neighbours import knn_predict_many

    g = torch.Generator().manual_seed(5)
    bank, queries = torch.randn(50, 8, generator=g), torch.randn(13, 8, generator=g)
    labels = torch.randint(0, 4, (50,), generator=g)
    many = knn_predict_many(bank, labels, queries, 4, [3, 20, 200], temperature=0.1, chunk=5)
    for k in (3, 20, 200):
        assert torch.allclose(many[k], knn_predict(bank, labels, queries, 4, k=k, temperature=0.1), atol=1e-6)


def test_sharded_topk_and_vote_equal_the_one_pass_knn() -> None:
    """On one process the sharded search is the plain top-k; a bank smaller than k pads with weight 0."""
    from callbacks.evaluation.neighbours import knn_memory_bytes, knn_predict_many, knn_vote, sharded_topk

    generator = torch.Generator().manual_seed(3)
    bank, queries = torch.randn(40, 8, generator=generator), torch.randn(9, 8, generator=generator)
    labels = torch.randint(0, 4, (40,), generator=generator)
    for bank_rows in (40, 12):  # 12 < k = 20: fewer neighbours than asked, as knn_predict_many
        sims, neighbour_labels = sharded_topk(bank[:bank_rows], labels[:bank_rows], queries, 20, chunk=4)
        votes = knn_vote(sims, neighbour_labels, 4, [3, 20], temperature=0.1)
        reference = knn_predict_many(bank[:bank_rows], labels[:bank_rows], queries, 4, [3, 20], temperature=0.1)
        for k in (3, 20):
            assert torch.allclose(votes[k], reference[k], atol=1e-6)
    # ImageNet on 8 ranks: a 160,146-row shard, 50,000 queries, k = 200: about 5 GB a rank (the whole bank: 10.5 GB)
    assert knn_memory_bytes(160_146, 50_000, 2048, 200, 8) < 5.1e9 < 4 * 1_281_167 * 2048


def test_chroma_metrics_match_skimage_and_see_a_tint_that_luma_misses() -> None:
    from skimage.color import rgb2ycbcr

    from lightning_modules.components.restoration_eval import RestorationMetrics, colour_shift, rgb_to_cbcr

    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 24, 24, generator=g) * 0.6 + 0.2
    reference = torch.from_numpy(rgb2ycbcr(target.permute(0, 2, 3, 1).double().numpy())[..., 1:]).permute(0, 3, 1, 2)
    assert torch.allclose(rgb_to_cbcr(target.double()) * 255, reference, atol=1e-6)
    # A warm tint that keeps the luma: +R, -B balanced through the Y weights (65.481 R + 24.966 B = 0).
    tinted = target + torch.tensor([0.04, 0.0, -0.04 * 65.481 / 24.966]).view(1, 3, 1, 1)
    shift = torch.tensor([0.04, 0.0, -0.04 * 65.481 / 24.966]).norm() * 255
    assert torch.allclose(colour_shift(tinted, target), shift.expand(2), atol=1e-3)
    metrics = RestorationMetrics()
    metrics.update(tinted, target, target)
    scores = {k: float(v) for k, v in metrics.compute().items()}
    assert scores["psnr_y"] > 45 and scores["psnr_cbcr"] < 35  # luma barely moves, chroma does
    assert scores["colour_shift"] > 20 and scores["colour_shift_rainy"] == 0.0


def test_a_half_precision_bank_read_in_blocks_keeps_the_neighbours() -> None:
    from callbacks.evaluation.neighbours import sharded_topk

    bank, bank_labels = blobs(60, 3, 8, seed=4)
    queries, _ = blobs(9, 3, 8, seed=5)
    full_sims, full_labels = sharded_topk(bank, bank_labels, queries, 10)
    for dtype in (torch.float16, torch.bfloat16):
        sims, labels = sharded_topk(bank.to(dtype), bank_labels, queries, 10, chunk=4, bank_chunk=7)  # 9 blocks
        assert sims.dtype == torch.float32 and torch.allclose(sims, full_sims, atol=1e-2)
        assert (labels == full_labels).float().mean() > 0.9  # near-ties may swap, the labels hardly change
