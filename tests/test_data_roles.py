"""Three roles for data: train, validation (the val/* monitors and every choice) and test (reported once). For one
experiment of every data config: the roles share no image, and the CPU protocols, where settings are chosen, have a
validation split."""

from __future__ import annotations

import pytest
from experiment_cases import CASES
from hydra.utils import instantiate


def roles(datamodule) -> dict[str, set[str]]:
    """The images of each role, named by file path (or by name for images made in memory, or by index)."""
    from datamodules.domains import DomainDataModule
    from datamodules.imagefolder import ImageDataModule
    from datamodules.rain import RainDataModule
    from datamodules.voc import VOCClassificationDataModule

    datamodule.setup("fit")
    if isinstance(datamodule, RainDataModule):
        splits = datamodule.splits

        def key(item) -> str:
            return str(item.path) if item.path is not None else f"memory:{item.name}"

        def pairs(role) -> set[str]:
            return {key(i) for pair in role for i in pair if i is not None}

        return {"train": {key(i) for i in [*splits.train_rainy, *splits.train_clean]}, "val": pairs(splits.val),
                "test": pairs(splits.test)}
    if isinstance(datamodule, ImageDataModule):
        return {"train": set(map(str, datamodule.train_files)), "val": set(map(str, datamodule.val_files)),
                "test": set(map(str, datamodule.eval_files))}
    if isinstance(datamodule, DomainDataModule):
        return {role: set(map(str, index)) for role, index in
                (("train", datamodule.train_index), ("val", datamodule.val_index), ("test", datamodule.test_index))}
    if isinstance(datamodule, VOCClassificationDataModule):
        return {"train": set(map(str, datamodule.splits["train"][0])), "val": set(),
                "test": set(map(str, datamodule.splits["eval"][0]))}
    raise AssertionError(f"no role reader for {type(datamodule).__name__}")


# One experiment per data config, and whether it must have a validation split (the CPU protocols choose settings;
# the paper protocols keep the official data and their monitors read the test split, with a warning).
EXPERIMENTS = {"nlcl_demo": True, "nlcl_rain100l_cpu": True, "nlcl_realrain": True, "nlcl_spa": False,
               "mocov2_cifar_cpu": True, "hcsc_cifar_cpu": True, "mocov2_imagenet_200ep": False,
               "dcodr_cars3d_cpu": True, "contrastive_cars3d_cpu": True, "dcodr_shapes": False,
               "dcodr_smallnorb": False, "voc07_svm": False}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_validation_and_test_share_no_image(make_cfg, data_roots, experiment) -> None:
    cfg = make_cfg(f"experiment={experiment}", *CASES[experiment].overrides(data_roots))
    found = roles(instantiate(cfg.data))
    assert found["train"] and found["test"]
    assert not found["val"] & found["test"], "validation images in the test split"
    assert not found["val"] & found["train"], "validation images in the training split"
    assert not found["train"] & found["test"], "test images in the training split"
    assert bool(found["val"]) == EXPERIMENTS[experiment]


def test_monitors_read_validation_and_say_so_when_there_is_none(tiny_imagenet_root, tiny_cifar_root) -> None:
    from datamodules.imagefolder import ImageDataModule

    cifar = ImageDataModule(str(tiny_cifar_root), train_dir="test", val_dir=None, holdout_fraction=0.2,
                            val_fraction=0.25, num_workers=0)
    assert cifar.monitor_split() == "val" and len(cifar.val_files) == 8 and len(cifar.eval_files) == 8
    imagenet = ImageDataModule(str(tiny_imagenet_root), num_workers=0)
    with pytest.warns(UserWarning, match="no validation split: the val/\\* monitors read the test split"):
        assert imagenet.monitor_split() == "eval"


def test_rain100l_default_split_fits_the_80_shipped_pairs(make_cfg, shared_like_root) -> None:
    """The real Rain100L redistribution has 80 pairs: the default split must use them without overrides."""
    cfg = make_cfg("experiment=nlcl_rain100l_cpu", f"data.root={shared_like_root / 'rain100l'}")
    datamodule = instantiate(cfg.data)
    found = roles(datamodule)
    splits = datamodule.splits
    sizes = (len(splits.train_rainy), len(splits.train_clean), len(splits.val), len(splits.test))
    assert sizes == (28, 28, 4, 20)
    assert len(found["train"] | found["val"] | found["test"]) == 28 + 28 + 2 * 4 + 2 * 20
