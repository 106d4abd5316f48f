"""Bad input stops with one clear line: broken image files, missing paths and keys, and checkpoints that would
run code on load (read with ``weights_only=True`` unless ``trust_checkpoint=true``)."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLEAN_ENV, ROOT
from PIL import Image


def write_bad_files(folder: Path, stem: str, reference: np.ndarray) -> None:
    """A truncated PNG and a JPEG whose scan is cut short, beside good files."""
    Image.fromarray(reference).save(folder / f"{stem}.jpg", quality=90)
    data = (folder / f"{stem}.jpg").read_bytes()
    (folder / f"{stem}.jpg").write_bytes(data[: len(data) // 2])


def test_rain_data_catches_a_truncated_jpeg_at_setup(tmp_path, paired_rain_dir) -> None:
    from datamodules.images import ImageReadError
    from datamodules.rain import FolderSplits, RainDataModule

    root = tmp_path / "rain"
    for sub in ("input", "target"):
        (root / sub).mkdir(parents=True)
        for f in (paired_rain_dir / sub).iterdir():
            (root / sub / f.name).write_bytes(f.read_bytes())
    rng = np.random.default_rng(0)
    write_bad_files(root / "input", "11", rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    dm = RainDataModule(FolderSplits(rainy_dir=str(root / "input"), clean_dir=str(root / "target")), crop_size=32)
    with pytest.raises(ImageReadError, match="11.jpg"):
        dm.setup("fit")
    skipping = RainDataModule(FolderSplits(rainy_dir=str(root / "input"), clean_dir=str(root / "target")),
                              crop_size=32, on_bad_file="skip")
    skipping.setup("fit")
    assert all(item.path.name != "11.jpg" for item in skipping.splits.train_rainy)


def test_image_folder_catches_corrupt_and_truncated_jpegs_at_setup(tmp_path) -> None:
    from datamodules.imagefolder import ImageDataModule
    from datamodules.images import ImageReadError
    from datamodules.synthetic import write_image_folder

    write_image_folder(tmp_path, num_classes=2, per_class=4, size=32, split="train", seed=0)
    klass = sorted((tmp_path / "train").iterdir())[0]
    rng = np.random.default_rng(1)
    write_bad_files(klass, "truncated", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    (klass / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 255, 3000, dtype=np.uint8)))
    with pytest.raises(ImageReadError, match=r"corrupt.jpg.*1 more bad file"):
        ImageDataModule(str(tmp_path), val_dir=None, num_workers=0).setup("fit")
    dm = ImageDataModule(str(tmp_path), val_dir=None, num_workers=0, on_bad_file="skip")
    dm.setup("fit")
    assert len(dm.train_files) == 8 and not any("corrupt" in f.name or "trunc" in f.name for f in dm.train_files)
    ImageDataModule(str(tmp_path), val_dir=None, num_workers=0, verify=False).setup("fit")  # the opt-out


def test_domain_folder_names_a_bad_image(tmp_path) -> None:
    from datamodules.domains import DomainFolderSource
    from datamodules.images import ImageReadError

    for domain in ("a", "b"):
        (tmp_path / domain).mkdir()
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(tmp_path / domain / f"{i}.png")
    write_bad_files(tmp_path / "b", "cut", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ImageReadError, match="cut.jpg"):
        DomainFolderSource(str(tmp_path), size=8).load()


@pytest.mark.parametrize("args, expected", [
    (["ckpt_path=/no/such.ckpt"], "error: checkpoint '/no/such.ckpt' does not exist (config key `ckpt_path`)"),
    (["experiment=nlcl_rain100l"], "data.root"),
    (["experiment=hcsc_cifar", "data.root=/no/where"], "error: data folder '/no/where' does not exist"),
])
def test_user_errors_are_one_line_without_a_traceback(tmp_path, args, expected) -> None:
    result = subprocess.run([sys.executable, "train.py", *args, f"paths.log_dir={tmp_path}"], cwd=ROOT,
                            env=CLEAN_ENV, capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout and "task_name:" not in result.stdout  # no config dump
    assert expected in result.stderr.strip().splitlines()[-1]


class TouchOnLoad:
    """An object whose unpickling creates a file: stands for a checkpoint that runs code on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def write_official_moco_checkpoint(path: Path, arch: str = "resnet18") -> dict[str, torch.Tensor]:
    """The layout of the MoCo v2 / HCSC model zoo: epoch, arch, ``state_dict`` with ``module.encoder_q.*`` (trunk
    and the MLP head ``fc.0`` / ``fc.2``) and ``module.encoder_k.*`` / ``module.queue``, and the optimiser state."""
    import torchvision

    net = torchvision.models.get_model(arch)
    trunk = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    head = {"fc.0.weight": torch.randn(512, 512), "fc.0.bias": torch.zeros(512),
            "fc.2.weight": torch.randn(128, 512), "fc.2.bias": torch.zeros(128)}
    state = {f"module.encoder_q.{k}": v for k, v in {**trunk, **head}.items()}
    state |= {f"module.encoder_k.{k}": v.clone() for k, v in {**trunk, **head}.items()}
    state |= {"module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9)
    torch.save({"epoch": 200, "arch": arch, "state_dict": state, "optimizer": optimizer.state_dict()}, path)
    return trunk


def test_a_checkpoint_that_runs_code_is_refused_unless_trusted(tmp_path) -> None:
    from contrastlab.checkpoints import trust_checkpoints
    from contrastlab.errors import UntrustedCheckpointError
    from lightning_modules.components.weights import read_state_dict

    marker = tmp_path / "code_ran"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": TouchOnLoad(marker)}, tmp_path / "evil.pth")
    with pytest.raises(UntrustedCheckpointError, match=r"evil.pth.*model.backbone.checkpoint.*trust_checkpoint=true"):
        read_state_dict(tmp_path / "evil.pth", "model.backbone.checkpoint")
    assert not marker.exists()
    try:
        trust_checkpoints(True)  # the explicit opt-in unpickles fully (and so runs the file's code)
        assert set(read_state_dict(tmp_path / "evil.pth", "model.backbone.checkpoint")) == {"w"}
        assert marker.exists()
    finally:
        trust_checkpoints(False)


def test_the_official_moco_layout_loads_into_a_trunk_without_unpickling(tmp_path) -> None:
    from lightning_modules.components.backbones import ResNetBackbone

    trunk = write_official_moco_checkpoint(tmp_path / "moco_v2_200ep.pth.tar")
    loaded = ResNetBackbone("resnet18", checkpoint=str(tmp_path / "moco_v2_200ep.pth.tar"))
    for name, value in trunk.items():
        assert torch.equal(loaded.net.state_dict()[name], value), name


def test_train_refuses_an_untrusted_checkpoint_in_one_line(tmp_path) -> None:
    torch.save({"state_dict": {}, "extra": TouchOnLoad(tmp_path / "code_ran")}, tmp_path / "evil.ckpt")
    result = subprocess.run([sys.executable, "train.py", f"ckpt_path={tmp_path / 'evil.ckpt'}",
                             f"paths.log_dir={tmp_path}"], cwd=ROOT, env=CLEAN_ENV, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout
    assert "trust_checkpoint=true" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "code_ran").exists()


def test_export_writes_a_strict_torchvision_trunk_and_detectron2_names(tmp_path) -> None:
    import pickle

    import torchvision

    from contrastlab.export import export_trunk

    trunk = write_official_moco_checkpoint(tmp_path / "moco.pth.tar", arch="resnet50")
    result = subprocess.run([sys.executable, "eval.py", "mode=export", f"ckpt_path={tmp_path / 'moco.pth.tar'}",
                             "export.format=torchvision", "export.arch=resnet50",
                             f"hydra.run.dir={tmp_path / 'torchvision'}"], cwd=ROOT, env=CLEAN_ENV,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    export_trunk(tmp_path / "moco.pth.tar", "detectron2", "resnet50", tmp_path / "detectron2" / "export")
    exported = torch.load(tmp_path / "torchvision" / "export" / "resnet50_torchvision.pth", weights_only=True)
    net = torchvision.models.resnet50()
    net.load_state_dict(exported, strict=True)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in trunk.items())
    with open(tmp_path / "detectron2" / "export" / "resnet50_detectron2.pkl", "rb") as handle:
        converted = pickle.load(handle)  # the file this test's export just wrote
    names = set(converted["model"])
    assert converted["matching_heuristics"] is True and len(names) == len(trunk)
    assert {"stem.conv1.weight", "stem.conv1.norm.running_mean", "res2.0.conv1.norm.weight", "res2.0.shortcut.weight",
            "res2.0.shortcut.norm.running_var", "res5.2.conv3.norm.bias", "res4.5.conv2.weight"} <= names
    assert not any(n.startswith(("fc", "stem.fc")) or "layer" in n or ".bn" in n for n in names)
