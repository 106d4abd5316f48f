"""PASCAL VOC 2007 classification for transfer evaluation (the standard frozen-feature SVM protocol).

Layout (the VOCdevkit one): ``<root>/JPEGImages/<id>.jpg`` and ``<root>/ImageSets/Main/<class>_<split>.txt`` with
lines ``<id> <1 | -1 | 0>`` (present, absent, difficult). Labels are (N, 20) in {1, 0, -1}: present, absent,
difficult. ``trainval`` is the training split (the SVMs and their cross-validation), ``test`` the evaluation split.

Batch contract: ``{"image": B x 3 x H x W, "index": B, "label": B x C}``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from contrastlab.errors import DataError, MissingPathError
from datamodules.augmentations import eval_transform as default_eval_transform
from datamodules.base import BaseDataModule
from datamodules.images import load_rgb

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
_VOC_VALUE = {"1": 1, "-1": 0, "0": -1}  # file value -> our label: present, absent, difficult


def read_voc_split(root: Path, split: str, classes: Sequence[str]) -> tuple[list[Path], torch.Tensor]:
    """Image files and (N, C) labels of ``split`` from the per-class lists of ``ImageSets/Main``."""
    ids: list[str] | None = None
    columns = []
    for name in classes:
        listing = root / "ImageSets" / "Main" / f"{name}_{split}.txt"
        if not listing.is_file():
            raise MissingPathError(f"VOC list '{listing}' does not exist (config key `data.root`)")
        rows = [line.split() for line in listing.read_text().splitlines() if line.strip()]
        if any(len(r) != 2 or r[1] not in _VOC_VALUE for r in rows):
            raise DataError(f"'{listing}' must hold lines '<image id> <1|-1|0>'")
        if ids is None:
            ids = [r[0] for r in rows]
        elif [r[0] for r in rows] != ids:
            raise DataError(f"'{listing}' lists other images than the first class's list of split {split!r}")
        columns.append([_VOC_VALUE[r[1]] for r in rows])
    assert ids is not None
    files = [root / "JPEGImages" / f"{i}.jpg" for i in ids]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise MissingPathError(f"{len(missing)} images of VOC split {split!r} are missing, e.g. '{missing[0]}'")
    return files, torch.tensor(columns, dtype=torch.long).T.contiguous()


class MultiLabelImages(Dataset):
    def __init__(self, files: Sequence[Path], labels: torch.Tensor, transform: Callable[[Any], Any]) -> None:
        self.files, self.labels, self.transform = list(files), labels, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.transform(load_rgb(self.files[index])), "index": index, "label": self.labels[index]}


class VOCClassificationDataModule(BaseDataModule):
    """Args:
        root: the VOC2007 folder (``VOCdevkit/VOC2007``).
        train_split / test_split: ``trainval`` / ``test``.
        classes: the class names (the 20 VOC classes).
        eval_transform: resize + centre crop (224 px, as the trunk was trained).
    """

    def __init__(self, root: str, train_split: str = "trainval", test_split: str = "test",
                 classes: Sequence[str] = VOC_CLASSES, eval_transform: Callable[[Any], torch.Tensor] | None = None,
                 eval_batch_size: int = 64, num_workers: int = 4, pin_memory: bool = True) -> None:
        super().__init__()
        self.root, self.train_split, self.test_split = Path(root).expanduser(), train_split, test_split
        self.classes = list(classes)
        self.eval_transform = eval_transform or default_eval_transform()
        self.eval_batch_size, self.num_workers, self.pin_memory = eval_batch_size, num_workers, pin_memory
        self.splits: dict[str, tuple[list[Path], torch.Tensor]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if not self.root.is_dir():
            raise MissingPathError(f"data folder '{self.root}' does not exist (config key `data.root`)")
        self.splits = {"train": read_voc_split(self.root, self.train_split, self.classes),
                       "eval": read_voc_split(self.root, self.test_split, self.classes)}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def feature_dataloader(self, split: str = "train") -> DataLoader:
        self.setup()
        files, labels = self.splits[split]
        return self.make_loader(MultiLabelImages(files, labels, self.eval_transform), self.eval_batch_size,
                                shuffle=False, persistent_workers=False)

    def test_dataloader(self) -> DataLoader:
        return self.feature_dataloader("eval")
