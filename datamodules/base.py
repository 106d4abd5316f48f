"""The contract between a datamodule and the methods / callbacks that read it.

Every datamodule of the project subclasses ``BaseDataModule``. What the callbacks may rely on:

- ``has_test_data()``: whether ``trainer.test`` has anything to evaluate (``train.py`` skips testing otherwise);
- ``num_classes``: classes of a labeled set, ``None`` when unlabeled (kNN / probes are then skipped);
- ``feature_dataloader(split)``: un-augmented images of ``"train"`` or ``"eval"``, every sample once across
  ranks and in order, for the evaluation callbacks (representation and disentanglement probes);
- ``per_device_batch_size()``: the training batch on one device, when the method must know it (MoCo's queue);
- ``make_loader(...)``: the one loader builder, which shards evaluation sets without padding duplicates so that
  2-process metrics equal 1-process metrics.

Where the records come from is a ``DataSource`` (a folder layout, a file format, generated data), one vocabulary
for every datamodule: Hydra builds it from the config (``data.splits`` for rain, ``data.source`` for domains) and
the datamodule calls ``load(seed)`` once, at setup.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.sampling import ShardSampler


class DataSource(abc.ABC):
    """Where a datamodule's records come from; ``load(seed)`` reads them once, at setup.

    ``seed`` fixes whatever the source itself draws (the rain sources' unpaired / held-out split, a generated
    scene); a source whose records are fixed ignores it (the domain sources: their datamodule draws the held-out
    split). A missing or malformed input raises a ``DataError`` naming the file or config key.
    """

    @abc.abstractmethod
    def load(self, seed: int = 0) -> Any:
        """The records (``RainSplits`` for the rain datamodule, ``DomainData`` for the domain datamodule)."""


class BaseDataModule(pl.LightningDataModule):
    """Base of the project's datamodules: the shared loader builder and the surface callbacks read."""

    num_workers: int = 0
    pin_memory: bool = True

    def distributed_rank(self) -> tuple[int, int]:
        """(global rank, world size) of this process; (0, 1) before a trainer is attached."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def run_dir(self) -> str | None:
        """The run folder (where ``bad_files.txt`` goes), once a trainer is attached."""
        return self.trainer.default_root_dir if self.trainer is not None else None

    def make_loader(self, dataset: Dataset, batch_size: int | None, shuffle: bool, drop_last: bool = False,
                    collate_fn: Callable[[list[Any]], Any] | None = None, persistent_workers: bool = True,
                    sampler: Any = None) -> DataLoader:
        """A loader over ``dataset``; an evaluation loader (no shuffle) reads only this rank's shard."""
        rank, world = self.distributed_rank()
        if sampler is None and not shuffle and world > 1:
            sampler = ShardSampler(dataset, rank, world)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                          num_workers=self.num_workers, pin_memory=self.pin_memory and torch.cuda.is_available(),
                          drop_last=drop_last, collate_fn=collate_fn,
                          persistent_workers=persistent_workers and self.num_workers > 0)

    def has_test_data(self) -> bool:
        """Whether ``trainer.test`` has anything to evaluate."""
        return True

    @property
    def num_classes(self) -> int | None:
        """Classes of a labeled set; None when the data has no class labels."""
        return None

    def has_val_data(self) -> bool:
        """Whether the data has a validation split (``feature_dataloader("val")``) for the ``val/*`` monitors."""
        return False

    def monitor_split(self) -> str:
        """The split the ``val/*`` monitors read: ``val``, or ``eval`` (with a warning) when there is none."""
        if self.has_val_data():
            return "val"
        from pytorch_lightning.utilities import rank_zero_warn

        rank_zero_warn(f"{type(self).__name__} has no validation split: the val/* monitors read the test split, so "
                       "choose nothing on them (give the data one, e.g. data.val_fraction)")
        return "eval"

    def feature_dataloader(self, split: str = "train") -> DataLoader:
        """Un-augmented images of ``split`` (train | val | eval), every sample once across ranks, in order."""
        raise NotImplementedError(f"{type(self).__name__} does not implement feature_dataloader(split), which the "
                                  "evaluation callbacks (representation_eval, disentanglement) read")

    def per_device_batch_size(self) -> int | None:
        """The training batch on one device; None when the datamodule does not fix it."""
        return None


def require_datamodule(trainer: pl.Trainer, kind: type[BaseDataModule], needed_by: str) -> BaseDataModule:
    """The trainer's datamodule when it is a ``kind``; otherwise stop with one line naming the callback."""
    from contrastlab.errors import ConfigError

    datamodule = trainer.datamodule
    if not isinstance(datamodule, kind):
        raise ConfigError(f"`{needed_by}` needs a {kind.__name__} (got {type(datamodule).__name__}); remove the "
                          f"callback (callbacks.{needed_by}=null) or use a datamodule that provides it")
    return datamodule
