"""Labeled-domain data: the balanced sampler (one and two ranks), the loaders, splits and augmentations."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.domain_augment import PositiveAugment
from datamodules.domains import (
    BalancedDomainBatchSampler,
    Cars3DSource,
    DomainDataModule,
    DomainFolderSource,
    NpzSource,
    ShapesSource,
)
from datamodules.shapes import FACTORS, render_shapes, sample_shapes
from datamodules.stratify import stratified_split


def test_every_batch_is_domains_times_images() -> None:
    domains = np.repeat(np.arange(10), 40)
    sampler = BalancedDomainBatchSampler(domains, domains_per_batch=4, per_domain=8, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 400 // 32
    for batch in batches:
        counts = Counter(int(domains[i]) for i in batch)
        assert len(batch) == 32 and len(counts) == 4 and set(counts.values()) == {8}


def test_two_ranks_share_one_global_batch_equal_to_the_one_process_batch() -> None:
    domains = np.repeat(np.arange(6), 64)
    single = BalancedDomainBatchSampler(domains, 3, 8, seed=0)
    ranks = [BalancedDomainBatchSampler(domains, 3, 8, rank=r, world_size=2, seed=0) for r in range(2)]
    for epoch in (0, 1):
        for sampler in (single, *ranks):
            sampler.set_epoch(epoch)
        assert len(single) == len(ranks[0]) == len(ranks[1]) == 384 // 24  # the global batch sets the epoch
        for whole, part0, part1 in zip(single, *ranks):
            assert not set(part0) & set(part1) and len(part0) == len(part1) == 12
            assert sorted(part0 + part1) == sorted(whole)  # the same images, so the same domains and size
            assert Counter(int(domains[i]) for i in part0 + part1) == Counter(int(domains[i]) for i in whole)
    first = list(single)
    single.set_epoch(5)
    assert list(single) != first  # a new shuffle every epoch


def test_a_batch_never_repeats_an_image_and_small_domains_give_fewer() -> None:
    domains = np.array([0] * 3 + [1] * 50)
    batches = list(BalancedDomainBatchSampler(domains, domains_per_batch=4, per_domain=8, seed=0, batches_per_epoch=20))
    for batch in batches:
        assert len(batch) == len(set(batch)) == 11 and Counter(int(domains[i]) for i in batch) == {0: 3, 1: 8}
    two = BalancedDomainBatchSampler(domains, 4, 8, rank=1, world_size=2, seed=0, batches_per_epoch=3)
    assert all(len(batch) == 5 for batch in two)  # 11 cut to 10, dealt to 2 ranks


def test_shuffled_batches_mix_domains_without_repeats() -> None:
    domains = np.repeat(np.arange(10), 40)
    sampler = BalancedDomainBatchSampler(domains, mode="shuffled", batch_size=64, seed=3)
    batches = list(sampler)
    assert len(batches) == 400 // 64
    assert all(len(b) == len(set(b)) == 64 for b in batches) and len({i for b in batches for i in b}) == 6 * 64
    assert all(len({int(domains[i]) for i in b}) > 4 for b in batches)


def test_shapes_factors_are_rendered_and_independent_of_the_domain() -> None:
    images, domains, factors = sample_shapes(50, size=32, seed=0)
    assert images.shape == (200, 32, 32, 3) and images.dtype == np.uint8
    assert set(factors) == set(FACTORS) and all(factors[k].max() < v for k, v in FACTORS.items())
    again = sample_shapes(50, size=32, seed=0)[0]
    assert np.array_equal(images, again)
    # Every factor changes the picture; the shape alone changes it too (a circle's orientation shows in the floor).
    base = {k: np.zeros(1, dtype=int) for k in FACTORS}
    reference = render_shapes(np.array([1]), base, 32)
    for name in FACTORS:
        changed = dict(base, **{name: np.array([FACTORS[name] - 1])})
        assert not np.array_equal(render_shapes(np.array([1]), changed, 32), reference), name
    assert not np.array_equal(render_shapes(np.array([0]), base, 32), reference)


def test_cars3d_layout(tiny_cars3d_root: Path, tmp_path: Path) -> None:
    data = Cars3DSource(str(tiny_cars3d_root), size=8, cache_dir=str(tmp_path)).load()
    assert data.images.shape == (6 * 96, 8, 8, 3)
    assert data.factor_levels == {"content": 96, "azimuth": 24, "elevation": 4}
    assert np.array_equal(data.factors["content"], data.factors["elevation"] * 24 + data.factors["azimuth"])
    assert data.domain_names[0] == "car_000" and (data.domains == 5).sum() == 96
    cached = Cars3DSource(str(tiny_cars3d_root), size=8, cache_dir=str(tmp_path)).load()  # from the cache
    assert np.array_equal(cached.images, data.images)
    with pytest.raises(FileNotFoundError, match="data.source.root"):
        Cars3DSource(str(tmp_path / "missing")).load()


def test_domain_folder_with_a_factor_table(tmp_path: Path) -> None:
    rows = [("path", "pose", "colour")]
    for d in ("photo", "edges"):
        (tmp_path / d).mkdir()
        for i in range(4):
            Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(tmp_path / d / f"{i}.png")
            rows.append((f"{d}/{i}.png", str(i % 2), ["red", "blue"][i // 2]))
    table = tmp_path / "labels.csv"
    with table.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    data = DomainFolderSource(str(tmp_path), factors_csv=str(table), size=16).load()
    assert data.images.shape == (8, 16, 16, 3) and data.domain_names == ["edges", "photo"]
    assert data.factor_levels == {"pose": 2, "colour": 2}
    with table.open("w") as handle:
        handle.write("path,pose\nphoto/0.png,1\n")
    with pytest.raises(ValueError, match="no row for"):
        DomainFolderSource(str(tmp_path), factors_csv=str(table)).load()


def test_npz_arrays_and_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "smallnorb.npz"
    np.savez(path, imgs=np.random.default_rng(0).integers(0, 255, (12, 16, 16), dtype=np.uint8),
             classes=np.repeat(np.arange(3), 4), azimuth=np.arange(12) % 6)
    data = NpzSource(str(path), factor_keys=["azimuth"], size=8).load()
    assert data.images.shape == (12, 8, 8, 3) and data.factor_levels == {"azimuth": 6}
    with pytest.raises(KeyError, match="lighting"):
        NpzSource(str(path), factor_keys=["lighting"]).load()


def test_split_is_stratified_and_seeded() -> None:
    domains = np.repeat(np.arange(5), 20)
    train, test = stratified_split(domains, len(domains), 0.1, 2, "numpy")
    assert len(test) == 10 and all((domains[test] == d).sum() == 2 for d in range(5))
    assert not set(train) & set(test)
    assert np.array_equal(stratified_split(domains, len(domains), 0.1, 2, "numpy")[1], test)


def test_the_seeded_splits_earlier_runs_used_are_pinned() -> None:
    """The held-out sets behind every reported number (CIFAR-10's image-folder split, each domain's 10 %): a
    change of the split algorithm or its generator must show here, not silently move the held-out images."""
    assert stratified_split([0] * 5 + [1] * 5, 10, 0.4, 0) == ([0, 3, 4, 6, 8, 9], [1, 2, 5, 7])
    domains = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1, 0])
    assert stratified_split(domains, 10, 0.4, 0, "numpy")[1] == [2, 5, 8, 9]
    with pytest.raises(ValueError, match="generator"):
        stratified_split(domains, 10, 0.4, 0, "torch")


def test_datamodule_batches_carry_positives_domains_and_factors() -> None:
    dm = DomainDataModule(ShapesSource(per_domain=40, size=16), domains_per_batch=4, per_domain=4, num_workers=0)
    assert dm.num_domains == 4 and dm.image_size == 16 and dm.has_test_data()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (16, 3, 16, 16) and batch["positive"].shape == (16, 3, 16, 16)
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1
    assert set(batch["factors"]) == set(FACTORS) and batch["domain"].shape == (16,)
    assert not torch.equal(batch["image"], batch["positive"])
    test = list(dm.test_dataloader())
    assert sum(len(b["index"]) for b in test) == 16 and "positive" not in test[0]


def test_positive_augmentations() -> None:
    image = torch.rand(3, 16, 16)
    torch.manual_seed(0)
    out = PositiveAugment()(image)
    assert out.shape == image.shape and out.min() >= 0 and out.max() <= 1
    for name in ("h_flip", "v_flip", "affine", "random_erasing", "hue_rot", "low_bright", "high_bright",
                 "low_contrast", "grayscale", "simsiam"):
        assert PositiveAugment([name])(image).shape == image.shape
    assert torch.equal(PositiveAugment(["h_flip"])(image), image.flip(-1))
    with pytest.raises(ValueError, match="unknown augmentation"):
        PositiveAugment(["jpeg"])


def test_small_domains_leave_training_and_the_official_probe_split_stays_within_the_test_codes() -> None:
    import torch

    from callbacks.disentanglement import split_within
    from datamodules.domains import DomainData

    class Fixed:
        def load(self, seed: int = 0) -> DomainData:
            domains = np.repeat(np.arange(3), [30, 30, 10])  # domain 2 is below the minimum of 20
            return DomainData(np.zeros((70, 8, 8, 3), np.uint8), domains, {"pose": np.arange(70) % 5})

    dm = DomainDataModule(Fixed(), test_fraction=0.3, min_domain_images=20, num_workers=0)
    dm.setup()
    domains = dm.data.domains
    assert set(domains[dm.train_index].tolist()) == {0, 1} and 2 in set(domains[dm.test_index].tolist())
    codes = torch.randn(21, 4)
    targets = {"domain": torch.tensor([0] * 10 + [1] * 10 + [2]), "pose": torch.arange(21) % 5}
    fit_x, fit_y, score_x, score_y = split_within(codes, targets, 0.7)
    assert len(fit_x) == 14 and len(score_x) == 6  # the single-image domain 2 dropped, 7 / 3 of each domain
    assert Counter(fit_y["domain"].tolist()) == {0: 7, 1: 7} and Counter(score_y["domain"].tolist()) == {0: 3, 1: 3}
