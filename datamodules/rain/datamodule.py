"""The NLCL datamodule: a split builder, loaders, bad-file checks."""

from __future__ import annotations

from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from contrastlab.errors import DataError
from datamodules.base import BaseDataModule
from datamodules.images import list_images
from datamodules.rain.datasets import FullImageDataset, UnpairedCropDataset
from datamodules.rain.splits import (  # noqa: F401  (re-exported)
    FolderSplits,
    ImageItem,
    PairedFolderSplit,
    RainSource,
    RainSplits,
    _items,
)
from datamodules.rain.synthetic_splits import SyntheticRainSplits  # noqa: F401  (re-exported)
from datamodules.verify import check_images


class RainDataModule(BaseDataModule):
    """Unpaired rainy/clean training crops, full-resolution evaluation, prediction on a folder.

    Args:
        splits: where the images come from, a ``RainSource`` (``FolderSplits``, ``PairedFolderSplit``,
            ``SyntheticRainSplits``).
        crop_size: training crop side (the paper: 256).
        batch_size: training images per device.
        samples_per_epoch: training samples per epoch; default max(|rainy|, |clean|) as in CycleGAN.
        val_images: validation images monitored during training: the split's ``val`` pairs, or, when it has none,
            the first test images (a warning says so: then nothing may be chosen on the monitors).
        val_crop: centre-crop side of the monitored images (keeps validation cheap); None = full image.
        predict_dir: a folder of images to derain with ``eval.py``.
        verify: decode every file once at setup (in parallel) so that a corrupt or truncated file stops the run
            before training.
        on_bad_file: ``error`` (stop, naming the file) or ``skip`` (drop it, with a listed report).
        seed: the split / synthetic-rain seed (same on every rank).
        root: base folder that the split's paths may refer to in the config (``${data.root}/...``).
    """

    def __init__(
        self,
        splits: RainSource,
        crop_size: int = 256,
        batch_size: int = 1,
        num_workers: int = 2,
        samples_per_epoch: int | None = None,
        val_images: int = 4,
        val_crop: int | None = 256,
        predict_dir: str | None = None,
        verify: bool = True,
        on_bad_file: str = "error",
        cache_images: bool = True,
        pin_memory: bool = True,
        seed: int = 0,
        root: str | None = None,
    ) -> None:
        super().__init__()
        self.root = root
        if crop_size < 32:
            raise DataError(f"`data.crop_size` must be >= 32 (the non-local sampler's 16 px patches), got {crop_size}")
        self.splits_source = splits
        self.crop_size, self.batch_size, self.num_workers = crop_size, batch_size, num_workers
        self.samples_per_epoch, self.val_images, self.val_crop = samples_per_epoch, val_images, val_crop
        self.predict_dir, self.verify, self.cache_images = predict_dir, verify, cache_images
        self.on_bad_file = on_bad_file
        self.pin_memory, self.seed = pin_memory, seed
        self.splits: RainSplits | None = None

    # Images are small benchmarks: every rank builds the same split from the seed, no file exchange needed.
    def setup(self, stage: str | None = None) -> None:
        if self.splits is None and stage != "predict":
            self.splits = self.splits_source.load(self.seed)
            if self.verify:
                self.splits = self._without_bad_files(self.splits)

    def _without_bad_files(self, splits: RainSplits) -> RainSplits:
        bad = check_images(splits.files(), self.on_bad_file, self.run_dir())
        if not bad:
            return splits

        def good(item: ImageItem | None) -> bool:
            return item is None or item.path not in bad

        return RainSplits([i for i in splits.train_rainy if good(i)], [i for i in splits.train_clean if good(i)],
                          [(r, c) for r, c in splits.test if good(r) and good(c)],
                          [(r, c) for r, c in splits.val if good(r) and good(c)])

    def has_test_data(self) -> bool:
        """Whether ``trainer.test`` has anything to evaluate (builds the split if needed)."""
        self.setup("test")
        return bool(self.splits and self.splits.test)

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, drop_last: bool = False) -> DataLoader:
        return self.make_loader(dataset, batch_size, shuffle, drop_last)

    def train_dataloader(self) -> DataLoader:
        assert self.splits is not None
        length = self.samples_per_epoch or max(len(self.splits.train_rainy), len(self.splits.train_clean))
        dataset = UnpairedCropDataset(self.splits.train_rainy, self.splits.train_clean, self.crop_size, length,
                                      cache=self.cache_images)
        return self._loader(dataset, self.batch_size, shuffle=True, drop_last=length >= 2 * self.batch_size)

    def val_dataloader(self) -> DataLoader | list:
        assert self.splits is not None
        pairs = self.splits.val
        if not pairs and self.splits.test:
            rank_zero_warn("the data has no validation split: the val/* monitors read the first test images, so "
                           "choose nothing on them (give it one: data.splits.n_val, val_dir or val_scenes)")
            pairs = self.splits.test
        if not pairs or self.val_images <= 0:
            return []
        return self._loader(FullImageDataset(pairs[: self.val_images], self.val_crop), 1, shuffle=False)

    def test_dataloader(self) -> DataLoader | list:
        assert self.splits is not None
        if not self.splits.test:
            return []
        return self._loader(FullImageDataset(self.splits.test), 1, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_dir is None:
            raise DataError("set `data.predict_dir` to a folder of rainy images to derain")
        files = list_images(self.predict_dir, key="data.predict_dir")
        if self.verify:
            bad = check_images(files, self.on_bad_file)
            files = [f for f in files if f not in bad]
        pairs = [(item, None) for item in _items(files)]
        return self._loader(FullImageDataset(pairs), 1, shuffle=False)


__all__ = [
    "FolderSplits",
    "FullImageDataset",
    "ImageItem",
    "PairedFolderSplit",
    "RainDataModule",
    "RainSplits",
    "SyntheticRainSplits",
    "UnpairedCropDataset",
]
