"""Decoding on the device: workers read bytes, the batch is decoded (CPU decoder here) and squared like PIL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HCSC_TINY, REPR_TINY, SMALL_TRUNK
from PIL import Image

CPU = ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true", "trainer.strategy=auto"]


def jpeg_folder(root: Path) -> Path:
    """ImageFolder train/<class>/: JPEGs of different sizes and one PNG per class (the CPU fallback)."""
    rng = np.random.default_rng(0)
    for label in range(3):
        folder = root / "train" / f"class_{label}"
        folder.mkdir(parents=True)
        for i in range(5):
            h, w = 40 + 4 * i, 56 - 3 * i
            base = np.clip(rng.normal(60 + 60 * label, 30, (4, 4, 3)), 0, 255).astype(np.uint8)
            image = Image.fromarray(base).resize((w, h), Image.BICUBIC)
            image.save(folder / (f"{i}.png" if i == 0 else f"{i}.jpg"), quality=95)
    return root


def test_decoded_batch_matches_the_loader_side_base_transform(tmp_path) -> None:
    from datamodules.augmentations import base_transform
    from datamodules.device_decode import EncodedImageDataset, collate_encoded, decode_batch
    from datamodules.images import load_rgb

    files = sorted((jpeg_folder(tmp_path) / "train").rglob("*.*"))
    batch = collate_encoded([EncodedImageDataset(files, None)[i] for i in range(len(files))])
    assert isinstance(batch["encoded"], list) and batch["index"].tolist() == list(range(len(files)))
    decoded = decode_batch(batch["encoded"], batch["path"], 32, "cpu")
    assert decoded.shape == (len(files), 3, 32, 32) and decoded.dtype == torch.uint8
    reference = torch.stack([base_transform(32)(load_rgb(f)) for f in files])
    assert (decoded.float() - reference.float()).abs().mean() < 2.0  # same pixels up to resampling rounding


def test_an_undecodable_file_is_named(tmp_path) -> None:
    from datamodules.device_decode import decode_batch
    from datamodules.images import ImageReadError

    good = torch.frombuffer(bytearray((Path(__file__).parent / "conftest.py").read_bytes()[:10]), dtype=torch.uint8)
    with pytest.raises(ImageReadError, match="broken.jpg"):
        decode_batch([good], ["broken.jpg"], 16, "cpu")


def test_hcsc_trains_from_bytes_decoded_on_the_device(make_cfg, tmp_path) -> None:
    from train import train

    root = jpeg_folder(tmp_path / "data")
    cfg = make_cfg("experiment=hcsc_imagenet_200ep", "data=imagenet_device_views", f"data.root={root}",
                   "data.val_dir=null", "data.holdout_fraction=0.2", "data.decode_on_device=true",
                   "data.device_views.specs=[{size:32,count:2}]", "data.device_views.base_size=40",
                   "data.eval_transform.resize=40", "data.eval_transform.crop=32", *REPR_TINY, *SMALL_TRUNK,
                   *HCSC_TINY, *CPU, "trainer.fast_dev_run=true", output_dir=tmp_path / "run")
    metrics = train(cfg)
    assert "train/proto" in metrics and "test/knn_top1" in metrics
