"""ImageNet-style data for self-supervised pretraining (MoCo v2, HCSC) and its evaluation.

Layouts: ImageFolder (``<root>/<train_dir>/<class>/*``, ``<root>/<val_dir>/<class>/*``) or a flat folder of
unlabeled images (any depth: sub-folders of an unlabeled set are *not* classes). ``num_classes`` comes from the
data: the number of class folders of a labeled set, ``None`` for an unlabeled one.

Batch contract (values normalised with the dataset mean/std):
    training    ``{"views": [B x 3 x h x w, ...], "index": B, "label": B}`` (``label`` only when labeled);
                ``index`` is the sample's position in the training set (HCSC's cluster look-up).
    evaluation  ``{"image": B x 3 x H x W, "index": B, "label": B}``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from contrastlab.errors import DataError, MissingPathError
from datamodules.augmentations import Views
from datamodules.augmentations import eval_transform as default_eval_transform
from datamodules.base import BaseDataModule
from datamodules.device_decode import EncodedImageDataset, collate_encoded, decode_batch
from datamodules.images import IMAGE_EXTENSIONS, list_images, load_rgb, natural_key
from datamodules.label_subsets import labelled_subset
from datamodules.stratify import stratified_split
from datamodules.verify import check_images


def index_image_folder(folder: str | Path, labeled: bool | None, key: str) -> tuple[list[Path], list[int] | None,
                                                                                   list[str] | None]:
    """Files, labels and class names of a folder; ``labeled=None`` decides by the layout.

    Labeled: every sub-folder holding images is a class. Unlabeled: every image below the folder, no labels.
    Auto: images directly in the folder mean unlabeled, otherwise labeled.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise MissingPathError(f"image folder '{folder}' does not exist (config key `{key}`)")
    if labeled is None:
        labeled = not any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())
    if not labeled:
        return list_images(folder, key=key, recursive=True), None, None
    classes = sorted((d.name for d in folder.iterdir() if d.is_dir()), key=natural_key)
    files, labels = [], []
    for label, name in enumerate(classes):
        members = [p for p in sorted((folder / name).rglob("*"), key=natural_key)
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        files += members
        labels += [label] * len(members)
    if not files:
        raise DataError(f"image folder '{folder}' has no class sub-folders with images (config key `{key}`); "
                         f"set `data.labeled=false` for a flat folder of unlabeled images")
    return files, labels, classes


class ImageDataset(Dataset):
    """Images with their index and (when known) label; ``transform`` gives a tensor or a list of views."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int] | None, transform: Callable[[Any], Any],
                 key: str) -> None:
        self.files, self.labels, self.transform, self.key = list(files), labels, transform, key

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = {self.key: self.transform(load_rgb(self.files[index])), "index": index}
        if self.labels is not None:
            sample["label"] = self.labels[index]
        return sample


def _take(files: list[Path], labels: list[int] | None, index: Sequence[int]) -> tuple[list[Path], list[int] | None]:
    """The files (and labels, when known) at ``index``."""
    return [files[i] for i in index], ([labels[i] for i in index] if labels is not None else None)


def _drop(files: list[Path], labels: list[int] | None, bad: set[Path]) -> tuple[list[Path], list[int] | None]:
    """``files`` (and their labels) without the ones in ``bad``."""
    if not bad:
        return files, labels
    return _take(files, labels, [i for i, f in enumerate(files) if f not in bad])


class ImageDataModule(BaseDataModule):
    """Training views and evaluation images of an ImageFolder (or flat) data set.

    Args:
        root: data set folder.
        train_dir / val_dir: sub-folders of the two splits (``val_dir=null``: no validation split).
        labeled: True (ImageFolder), False (flat, unlabeled), None (decide by the layout).
        holdout_fraction: carve this stratified fraction out of the training folder as the evaluation (test)
            split (CIFAR-10 here ships only its test set: 8,000 kept, 2,000 held out), by ``split_seed``.
        val_fraction: carve this stratified fraction out of what is left for training as the validation split
            (the ``val/*`` monitors and every choice; CIFAR: 6,000 / 2,000 / 2,000). None: no validation split,
            the monitors then read the evaluation split and say so.
        train_views: the view generator (``Views``) run in the loader workers; ignored with ``device_views``.
        device_views: a ``DeviceViews`` that augments batches on the accelerator after transfer; the workers
            then only decode and resize.
        eval_transform: resize + centre crop for evaluation and feature extraction.
        batch_size: images per device and step; ``global_batch_size`` (if set) is divided by the world size.
        max_train_samples: a stratified subset of the training split (quick runs).
        verify: decode every file once at setup (in parallel threads) so that a corrupt or truncated image stops
            the run before training instead of killing a loader worker mid-epoch.
        on_bad_file: ``error`` (stop, naming the file) or ``skip`` (drop it; the list goes to bad_files.txt).
        decode_on_device: with ``device_views``, the workers read file bytes only and the batch is decoded on the
            training device (``datamodules.device_decode``; nvJPEG on CUDA, the CPU decoder on a CPU run).
        label_fraction / label_list: train on a labelled part of the training split only (semi-supervised
            fine-tuning): a seeded stratified fraction, or the files a list names (``datamodules.label_subsets``).
    """

    def __init__(
        self,
        root: str,
        train_dir: str | None = "train",
        val_dir: str | None = "val",
        labeled: bool | None = None,
        holdout_fraction: float | None = None,
        val_fraction: float | None = None,
        split_seed: int = 0,
        train_views: Views | None = None,
        device_views: Any | None = None,
        eval_transform: Callable[[Any], torch.Tensor] | None = None,
        batch_size: int = 32,
        global_batch_size: int | None = None,
        eval_batch_size: int = 256,
        num_workers: int = 8,
        max_train_samples: int | None = None,
        pin_memory: bool = True,
        verify: bool = True,
        on_bad_file: str = "error",
        decode_on_device: bool = False,
        label_fraction: float | None = None,
        label_list: str | None = None,
    ) -> None:
        super().__init__()
        self.root, self.train_dir, self.val_dir = Path(root).expanduser(), train_dir, val_dir
        self.labeled, self.holdout_fraction, self.split_seed = labeled, holdout_fraction, split_seed
        self.val_fraction = val_fraction
        self.train_views = train_views
        self.device_views = device_views
        self.eval_transform = eval_transform or default_eval_transform()
        self.batch_size, self.global_batch_size, self.eval_batch_size = batch_size, global_batch_size, eval_batch_size
        self.num_workers, self.max_train_samples, self.pin_memory = num_workers, max_train_samples, pin_memory
        self.verify, self.on_bad_file = verify, on_bad_file
        if decode_on_device and device_views is None:
            raise DataError("`data.decode_on_device=true` needs `data.device_views` (use data=imagenet_device_views)")
        self.decode_on_device = decode_on_device
        self.label_fraction, self.label_list = label_fraction, label_list
        self.train_files: list[Path] = []
        self.train_labels: list[int] | None = None
        self.eval_files: list[Path] = []
        self.eval_labels: list[int] | None = None
        self.val_files: list[Path] = []
        self.val_labels: list[int] | None = None
        self.classes: list[str] | None = None

    # ---- indexing ----------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_files:
            return
        if not self.root.is_dir():
            raise MissingPathError(f"data folder '{self.root}' does not exist (config key `data.root`)")
        train_folder = self.root / self.train_dir if self.train_dir else self.root
        files, labels, classes = index_image_folder(train_folder, self.labeled, "data.train_dir")
        self.classes = classes
        eval_files: list[Path] = []
        eval_labels: list[int] | None = None
        if self.holdout_fraction:
            kept, held = stratified_split(labels, len(files), self.holdout_fraction, self.split_seed)
            (eval_files, eval_labels), (files, labels) = _take(files, labels, held), _take(files, labels, kept)
        elif self.val_dir and (self.root / self.val_dir).is_dir():
            eval_files, eval_labels, val_classes = index_image_folder(self.root / self.val_dir, self.labeled,
                                                                      "data.val_dir")
            if classes is not None and val_classes is not None and val_classes != classes:
                raise DataError(f"class folders of '{self.root / self.val_dir}' differ from the training split's")
        elif self.val_dir:
            raise MissingPathError(f"validation folder '{self.root / self.val_dir}' does not exist "
                                    f"(config key `data.val_dir`; set it to null if there is none)")
        val_files: list[Path] = []
        val_labels: list[int] | None = None
        if self.val_fraction:
            kept, held = stratified_split(labels, len(files), self.val_fraction, self.split_seed + 3)
            (val_files, val_labels), (files, labels) = _take(files, labels, held), _take(files, labels, kept)
        if self.max_train_samples and self.max_train_samples < len(files):
            fraction = 1 - self.max_train_samples / len(files)
            kept, _ = stratified_split(labels, len(files), fraction, self.split_seed + 1)
            files, labels = _take(files, labels, kept)
        if self.label_fraction is not None or self.label_list is not None:
            chosen = labelled_subset(files, labels, self.label_fraction, self.label_list, self.split_seed + 2)
            files, labels = _take(files, labels, chosen)
        if self.verify:
            bad = check_images([*files, *val_files, *eval_files], self.on_bad_file, self.run_dir())
            files, labels = _drop(files, labels, bad)
            val_files, val_labels = _drop(val_files, val_labels, bad)
            eval_files, eval_labels = _drop(eval_files, eval_labels, bad)
        self.train_files, self.train_labels = files, labels
        self.val_files, self.val_labels = val_files, val_labels
        self.eval_files, self.eval_labels = eval_files, eval_labels

    @property
    def num_classes(self) -> int | None:
        """Classes of a labeled set; None when unlabeled (probes and kNN are then skipped)."""
        self.setup()
        return len(self.classes) if self.classes is not None else None

    @property
    def num_train_samples(self) -> int:
        self.setup()
        return len(self.train_files)

    def has_test_data(self) -> bool:
        self.setup()
        return bool(self.eval_files)

    def has_val_data(self) -> bool:
        self.setup()
        return bool(self.val_files)

    # ---- batch size ------------------------------------------------------------------------------------------
    def per_device_batch_size(self) -> int:
        world = self.distributed_rank()[1]
        if self.global_batch_size is None:
            return self.batch_size
        if self.global_batch_size % world:
            raise DataError(f"`data.global_batch_size`={self.global_batch_size} is not divisible by the "
                             f"{world} devices")
        return self.global_batch_size // world

    # ---- loaders ---------------------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, batch_size: int, train: bool, collate_fn: Any = None) -> DataLoader:
        return self.make_loader(dataset, batch_size, shuffle=train, drop_last=train, collate_fn=collate_fn,
                                persistent_workers=train)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        if self.decode_on_device:
            batch = self.per_device_batch_size()
            return self._loader(EncodedImageDataset(self.train_files, self.train_labels), batch, train=True,
                                collate_fn=collate_encoded)
        if self.device_views is not None:
            transform = self.device_views.base_transform()
        elif self.train_views is not None:
            transform = self.train_views
        else:
            raise DataError("set `data.train_views` (loader-side augmentation) or `data.device_views`")
        dataset = ImageDataset(self.train_files, self.train_labels, transform,
                               "raw" if self.device_views is not None else "views")
        batch = self.per_device_batch_size()
        if len(dataset) < batch:
            raise DataError(f"the training split has {len(dataset)} images, fewer than one batch of {batch}")
        return self._loader(dataset, batch, train=True)

    def feature_dataloader(self, split: str = "train") -> DataLoader:
        """Evaluation-transformed images of ``split`` (train | val | eval), every sample once across ranks, in
        order."""
        self.setup()
        files, labels = {"train": (self.train_files, self.train_labels), "val": (self.val_files, self.val_labels),
                         "eval": (self.eval_files, self.eval_labels)}[split]
        return self._loader(ImageDataset(files, labels, self.eval_transform, "image"), self.eval_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        return self.feature_dataloader("eval")

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and "encoded" in batch:  # decode_on_device: bytes -> uint8 squares on the device
            batch = dict(batch)
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            batch["raw"] = decode_batch(batch.pop("encoded"), batch.pop("path"), self.device_views.base_size, device)
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.device_views is not None and isinstance(batch, dict) and "raw" in batch:
            batch = dict(batch)
            batch["views"] = self.device_views(batch.pop("raw"))
        return batch
