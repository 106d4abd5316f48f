"""ImageNet-style data: layouts, num_classes from the data, splits, views (CPU and on-device), batch sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules.augmentations import Views, ViewSpec, eval_transform, hcsc_multi_crop, two_crops
from datamodules.device_augment import DeviceViews, _blur
from datamodules.imagefolder import ImageDataModule, index_image_folder, stratified_split
from datamodules.synthetic import write_image_folder


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_imagenet")
    write_image_folder(root, num_classes=3, per_class=8, size=40, split="train", seed=0)
    write_image_folder(root, num_classes=3, per_class=3, size=40, split="val", seed=1)
    return root


def cifar_like(root: Path) -> ImageDataModule:
    return ImageDataModule(str(root), train_dir="train", val_dir=None, holdout_fraction=0.25, batch_size=4,
                           num_workers=0, train_views=Views([ViewSpec(32, (0.2, 1.0), 0.0, 2)]),
                           eval_transform=eval_transform(None, 32))


def test_imagefolder_layout_gives_classes_and_indices(tiny_imagenet: Path) -> None:
    dm = ImageDataModule(str(tiny_imagenet), batch_size=4, num_workers=0, train_views=two_crops(32, 0.0),
                         eval_transform=eval_transform(36, 32))
    assert dm.num_classes == 3 and dm.num_train_samples == 24 and dm.has_test_data()
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["views"]) == 2 and batch["views"][0].shape == (4, 3, 32, 32)
    assert batch["index"].shape == (4,) and batch["label"].max() < 3
    test = next(iter(dm.test_dataloader()))
    assert test["image"].shape == (9, 3, 32, 32)
    features = list(dm.feature_dataloader("train"))
    assert sorted(torch.cat([b["index"] for b in features]).tolist()) == list(range(24))


def test_unlabeled_folders_have_no_classes_even_with_subfolders(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "flat", num_classes=2, per_class=3, size=16, split=None, labeled=False)
    write_image_folder(tmp_path / "flat" / "more", num_classes=2, per_class=2, size=16, split=None, labeled=False)
    files, labels, classes = index_image_folder(tmp_path / "flat", labeled=None, key="data.root")
    assert len(files) == 10 and labels is None and classes is None
    dm = ImageDataModule(str(tmp_path), train_dir="flat", val_dir=None, labeled=False, batch_size=2,
                         num_workers=0, train_views=two_crops(16, 0.0))
    assert dm.num_classes is None and dm.num_train_samples == 10
    batch = next(iter(dm.train_dataloader()))
    assert "label" not in batch and "index" in batch


def test_missing_and_empty_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data.root"):
        ImageDataModule(str(tmp_path / "none")).setup()
    (tmp_path / "train" / "empty_class").mkdir(parents=True)
    with pytest.raises(ValueError, match="no class sub-folders with images"):
        ImageDataModule(str(tmp_path), val_dir=None).setup()
    write_image_folder(tmp_path / "ok", num_classes=2, per_class=2, size=16)
    with pytest.raises(FileNotFoundError, match="data.val_dir"):
        ImageDataModule(str(tmp_path / "ok"), val_dir="val").setup()


def test_stratified_holdout_is_seeded_and_per_class(tiny_imagenet: Path) -> None:
    labels = [0] * 8 + [1] * 8 + [2] * 8
    kept, held = stratified_split(labels, 24, 0.25, seed=0)
    assert len(held) == 6 and sorted(kept + held) == list(range(24))
    assert [sum(labels[i] == c for i in held) for c in range(3)] == [2, 2, 2]
    assert stratified_split(labels, 24, 0.25, seed=0) == (kept, held)
    assert stratified_split(labels, 24, 0.25, seed=1) != (kept, held)
    dm = cifar_like(tiny_imagenet)
    assert dm.num_train_samples == 18 and len(dm.eval_files) == 6
    assert not set(dm.train_files) & set(dm.eval_files)


def test_view_sets() -> None:
    from PIL import Image

    image = Image.new("RGB", (300, 260), (120, 30, 200))
    multi = hcsc_multi_crop()
    views = multi(image)
    assert [v.shape[-1] for v in views] == [224, 224, 192, 160, 128, 96] == multi.sizes
    plain = Views([{"size": 64, "scale": [0.5, 1.0], "count": 1, "kind": "plain"}])(image)
    assert len(plain) == 1 and plain[0].shape == (3, 64, 64)
    with pytest.raises(ValueError, match="kind"):
        Views([{"size": 8, "kind": "fancy"}])


def test_global_batch_is_divided_over_devices(tiny_imagenet: Path) -> None:
    dm = ImageDataModule(str(tiny_imagenet), global_batch_size=8, num_workers=0, train_views=two_crops(32, 0.0))

    class FakeTrainer:
        global_rank, world_size = 0, 2

    dm.trainer = FakeTrainer()
    assert dm.per_device_batch_size() == 4
    FakeTrainer.world_size = 3
    with pytest.raises(ValueError, match="global_batch_size"):
        dm.per_device_batch_size()


def test_device_views_shapes_statistics_and_swappability(tiny_imagenet: Path) -> None:
    torch.manual_seed(0)
    device_views = DeviceViews([{"size": 24, "count": 2}, {"size": 16, "scale": [0.1, 0.5]}], base_size=40,
                               mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    raw = (torch.rand(8, 3, 40, 40) * 255).to(torch.uint8)
    views = device_views(raw)
    assert [tuple(v.shape) for v in views] == [(8, 3, 24, 24)] * 2 + [(8, 3, 16, 16)]
    assert not torch.allclose(views[0], views[1])  # independent draws per view
    assert all(torch.isfinite(v).all() and v.abs().max() <= 2.0 + 1e-5 for v in views)  # within normalised range
    # The datamodule hands raw images to the device stage; the method sees the same batch contract.
    dm = ImageDataModule(str(tiny_imagenet), batch_size=4, num_workers=0, device_views=device_views)
    batch = next(iter(dm.train_dataloader()))
    assert "views" not in batch and batch["raw"].dtype == torch.uint8
    batch = dm.on_after_batch_transfer(batch, 0)
    assert [v.shape[-1] for v in batch["views"]] == [24, 24, 16] and "index" in batch


def test_device_blur_matches_a_direct_convolution() -> None:
    x = torch.rand(2, 3, 12, 12)
    sigma = torch.tensor([0.5, 1.5])
    out = _blur(x, sigma, 5)
    for b in range(2):
        offsets = torch.arange(-2, 3, dtype=torch.float32)
        k1 = torch.exp(-0.5 * (offsets / sigma[b]) ** 2)
        k1 = k1 / k1.sum()
        kernel = (k1[:, None] * k1[None, :]).expand(3, 1, 5, 5)
        padded = torch.nn.functional.pad(x[b:b + 1], (2, 2, 2, 2), mode="reflect")
        assert torch.allclose(out[b:b + 1], torch.nn.functional.conv2d(padded, kernel, groups=3), atol=1e-5)
