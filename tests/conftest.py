"""Shared fixtures: Hydra compose through the real config tree, tiny synthetic datasets on disk."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
# The tests assume the project's default error reporting (one line, no traceback); a caller's HYDRA_FULL_ERROR=1
# (a common Hydra setting) would turn it off in the tests' own command-line runs. Tests of that variable set it.
os.environ.pop("HYDRA_FULL_ERROR", None)
# The environment before any test ran: command-line runs start from it. An in-process Trainer with a DDP
# strategy exports LOCAL_RANK / WORLD_SIZE / MASTER_PORT, which a later `python train.py trainer=ddp_sim`
# would inherit and misread as "launched by an external launcher".
CLEAN_ENV = dict(os.environ)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from contrastlab.run import register_resolvers  # noqa: E402

register_resolvers()
CONF = str(ROOT / "conf")

from experiment_cases import (  # noqa: E402,F401  (re-exported: the tests' shared tiny settings)
    DCODR_GENERATOR_TINY,
    DCODR_TINY,
    HCSC_TINY,
    NLCL_TINY,
    REPR_TINY,
    SMALL_TRUNK,
)


def compose_config(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` as the CLI would and point its run folder at ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir)
        cfg.print_config = False
        cfg.trainer.enable_progress_bar = False
        cfg.trainer.enable_model_summary = False
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    def factory(*overrides: str, config_name: str = "train", output_dir: Path | None = None) -> DictConfig:
        return compose_config(config_name, list(overrides), output_dir or tmp_path / "run")

    yield factory
    GlobalHydra.instance().clear()


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random smooth colour image (uint8 H x W x 3): low-frequency noise upsampled."""
    coarse = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.float32)
    image = Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BICUBIC)
    array = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, size=(height, width, 3))
    return np.clip(array, 0, 255).astype(np.uint8)


def add_streaks(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    rainy = image.astype(np.int32).copy()
    h, w, _ = image.shape
    for _ in range(max(3, h * w // 150)):
        y, x = rng.integers(0, h - 8), rng.integers(0, w)
        rainy[y:y + 8, x] += 90
    return np.clip(rainy, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def paired_rain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Rain100L-like paired folder: input/N.png (rainy), target/N.png (clean), N = 1..10, 48x40."""
    root = tmp_path_factory.mktemp("rain_paired")
    rng = np.random.default_rng(0)
    (root / "input").mkdir()
    (root / "target").mkdir()
    for n in range(1, 11):
        clean = smooth_image(rng, 40, 48)
        Image.fromarray(clean).save(root / "target" / f"{n}.png")
        Image.fromarray(add_streaks(rng, clean)).save(root / "input" / f"{n}.png")
    return root


@pytest.fixture(scope="session")
def shared_like_root(tmp_path_factory: pytest.TempPathFactory, paired_rain_dir: Path) -> Path:
    """A miniature of ../shared/data: rain100l/{input,target}/1..80 and real_rain/rainy/1..100 (some grayscale)."""
    root = tmp_path_factory.mktemp("shared")
    rng = np.random.default_rng(1)
    for sub in ("rain100l/input", "rain100l/target", "real_rain/rainy"):
        (root / sub).mkdir(parents=True)
    for n in range(1, 81):
        clean = smooth_image(rng, 36, 40)
        Image.fromarray(clean).save(root / "rain100l" / "target" / f"{n}.png")
        Image.fromarray(add_streaks(rng, clean)).save(root / "rain100l" / "input" / f"{n}.png")
    for n in range(1, 101):
        rainy = add_streaks(rng, smooth_image(rng, 36, 40))
        image = Image.fromarray(rainy)
        (image.convert("L") if n % 17 == 0 else image).save(root / "real_rain" / "rainy" / f"{n}.png")
    return root


@pytest.fixture(scope="session")
def tiny_imagenet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ImageFolder train/val splits, 3 classes, 40 px."""
    from datamodules.synthetic import write_image_folder

    root = tmp_path_factory.mktemp("imagenet")
    write_image_folder(root, num_classes=3, per_class=8, size=40, split="train", seed=0)
    write_image_folder(root, num_classes=3, per_class=3, size=40, split="val", seed=1)
    (root / "labelled.txt").write_text("0.png\n1.png\n2.png\n")  # a semi-supervised label list: 9 of the 24
    return root


@pytest.fixture(scope="session")
def tiny_cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The layout of ../shared/data/cifar10 (test/<class>/...), 4 classes, 32 px."""
    from datamodules.synthetic import write_image_folder

    root = tmp_path_factory.mktemp("cifar")
    write_image_folder(root, num_classes=4, per_class=10, size=32, split="test", seed=2)
    return root


@pytest.fixture(scope="session")
def tiny_spa_root(tmp_path_factory: pytest.TempPathFactory, paired_rain_dir: Path) -> Path:
    """SPA-Data's test layout: real_test_1000/rain/N.png beside real_test_1000/gt/Ngt.png."""
    root = tmp_path_factory.mktemp("spa")
    for sub, suffix in (("input", ""), ("target", "gt")):
        folder = root / "real_test_1000" / ("rain" if sub == "input" else "gt")
        folder.mkdir(parents=True)
        for f in sorted((paired_rain_dir / sub).iterdir()):
            (folder / f"{f.stem}{suffix}{f.suffix}").write_bytes(f.read_bytes())
    return root


@pytest.fixture(scope="session")
def tiny_voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The VOC2007 layout with 3 classes, 18 trainval and 9 test images of 40 px."""
    from datamodules.synthetic import write_voc_layout

    return write_voc_layout(tmp_path_factory.mktemp("voc"), ["cat", "dog", "car"], {"trainval": 18, "test": 9})


@pytest.fixture(scope="session")
def resnet18_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Trunk checkpoints (random weights) in the MoCo key layout, ImageNet stem and CIFAR stem."""
    from lightning_modules.components.backbones import ResNetBackbone

    folder = tmp_path_factory.mktemp("trunks")
    paths = {}
    for name, cifar in (("imagenet", False), ("cifar", True)):
        trunk = ResNetBackbone("resnet18", cifar_stem=cifar)
        paths[name] = folder / f"{name}.pth"
        torch.save({"state_dict": {f"module.encoder_q.{k}": v for k, v in trunk.net.state_dict().items()}},
                   paths[name])
    return paths


@pytest.fixture(scope="session")
def tiny_cars3d_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The public Cars3D layout with 6 cars of 16 px renders: cars/car_XXX_mesh.mat (im: 16x16x3x24x4), list.txt."""
    from scipy.io import savemat

    root = tmp_path_factory.mktemp("cars3d")
    folder = root / "cars"
    folder.mkdir()
    rng = np.random.default_rng(3)
    names = []
    for car in range(6):
        base = rng.integers(0, 255, size=3)
        im = np.zeros((16, 16, 3, 24, 4), dtype=np.uint8)
        for azimuth in range(24):
            for elevation in range(4):
                im[:, :, :, azimuth, elevation] = np.clip(base + rng.integers(0, 40, (16, 16, 3)) + azimuth * 4
                                                          + elevation * 20, 0, 255)
        name = f"car_{car:03d}_mesh"
        savemat(folder / f"{name}.mat", {"im": im, "mask": np.ones((16, 16, 24, 4), dtype=np.uint8)})
        names.append(name)
    (folder / "list.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_domain_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Stand-ins for the other DCoDR layouts: a 3dshapes.h5, a DCoDR npz, a <domain>/<image> folder + CSV."""
    root = tmp_path_factory.mktemp("domain_files")
    rng = np.random.default_rng(4)
    files: dict[str, Path] = {}
    try:
        import h5py

        hues = [rng.integers(0, 3, 64) / 3 for _ in range(3)]
        labels = np.stack([*hues, 0.75 + rng.integers(0, 2, 64) / 4, np.repeat(np.arange(4), 16),
                           rng.integers(0, 3, 64) * 10.0], axis=1)
        with h5py.File(root / "3dshapes.h5", "w") as handle:
            handle["images"] = rng.integers(0, 255, (64, 64, 64, 3), dtype=np.uint8)
            handle["labels"] = labels
        files["shapes3d"] = root / "3dshapes.h5"
    except ImportError:
        pass
    np.savez(root / "prepared.npz", imgs=rng.integers(0, 255, (48, 16, 16), dtype=np.uint8),
             classes=np.repeat(np.arange(4), 12), azimuth=np.arange(48) % 3, elevation=np.arange(48) % 2,
             lighting=np.arange(48) % 4, landmarks=rng.uniform(0, 16, (48, 136)).astype(np.float32))
    files["npz"] = root / "prepared.npz"
    folder = root / "edges2shoes"
    rows = ["path,shoe_type"]
    for domain in ("edges", "photo"):
        (folder / domain).mkdir(parents=True)
        for i in range(16):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / domain / f"{i}.png")
            rows.append(f"{domain}/{i}.png,{['boot', 'sandal'][i % 2]}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    files["folder"] = folder
    return files


def rain100l_checkpoint(make_cfg: Callable[..., DictConfig], paired_root: Path, output_dir: Path,
                        extra: list[str]) -> tuple[list[str], Path]:
    """Train tiny NLCL for one epoch on a 3/3/4 split of ``paired_root``; the overrides and its last.ckpt."""
    from train import train

    common = ["experiment=nlcl_rain100l", f"data.root={paired_root}", *NLCL_TINY, *extra,
              "data.splits.n_rainy=3", "data.splits.n_clean=3", "data.splits.n_test=3",
              "data.splits.n_val=1"]
    train(make_cfg(*common, "trainer.max_epochs=1", "data.samples_per_epoch=2", "test=false",
                   "trainer.check_val_every_n_epoch=5", output_dir=output_dir))
    return common, output_dir / "checkpoints" / "last.ckpt"


@pytest.fixture
def data_roots(paired_rain_dir, shared_like_root, tiny_imagenet_root, tiny_cifar_root, resnet18_checkpoints,
               tiny_cars3d_root, tiny_domain_files, tiny_voc_root, tiny_spa_root) -> dict[str, Path]:
    """Every fixture data set by the name ``tests/experiment_cases.py`` uses."""
    return {"paired": paired_rain_dir, "shared": shared_like_root, "imagenet": tiny_imagenet_root,
            "cifar": tiny_cifar_root, "cars3d": tiny_cars3d_root, "imagenet_trunk": resnet18_checkpoints["imagenet"],
            "cifar_trunk": resnet18_checkpoints["cifar"], "imagenet_label_list": tiny_imagenet_root / "labelled.txt",
            "voc": tiny_voc_root, "spa": tiny_spa_root, **tiny_domain_files}
