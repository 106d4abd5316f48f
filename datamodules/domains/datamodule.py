"""The DCoDR datamodule: a source, a stratified held-out split, balanced (or shuffled) global training batches,
feature loaders."""

from __future__ import annotations

import numpy as np
from torch.utils.data import DataLoader

from datamodules.base import BaseDataModule, DataSource
from datamodules.domain_augment import PositiveAugment
from datamodules.domains.datasets import BalancedDomainBatchSampler, DomainDataset, WholeBatches
from datamodules.domains.sources import DomainData
from datamodules.stratify import stratified_split


class DomainDataModule(BaseDataModule):
    """Balanced domain batches for training; every image once (sharded) for evaluation.

    Args:
        source: where the images come from (a ``*Source`` with ``load()``).
        test_fraction: stratified held-out fraction of every domain (DCoDR: 10 %), by ``split_seed``.
        val_fraction: stratified fraction of every domain's *training* images set aside for validation (the
            ``val/*`` monitors and every choice); 0: none.
        min_domain_images: train only on domains with at least this many images (the official CelebA training
            drops identities with 19 or fewer: 20); their held-out images stay in the test split.
        domains_per_batch / per_domain: the balanced batch (4 x 32), the global batch over all ranks.
        batching: ``balanced`` (DCoDR) or ``shuffled`` (the standard contrastive ablation: ``batch_size`` images of
            any domains, the official ``class_negs=False``).
        batch_size: the shuffled global batch (64).
        augment: the positive-view augmentation (``PositiveAugment``).
        batches_per_epoch: default floor(N_train / (batch x world)) as the official loader.
    """

    def __init__(self, source: DataSource, augment: PositiveAugment | None = None, test_fraction: float = 0.1,
                 split_seed: int = 2, domains_per_batch: int = 4, per_domain: int = 32,
                 batches_per_epoch: int | None = None, eval_batch_size: int = 256, num_workers: int = 2,
                 pin_memory: bool = True, seed: int = 0, batching: str = "balanced", batch_size: int = 64,
                 val_fraction: float = 0.0, min_domain_images: int = 0) -> None:
        super().__init__()
        self.source, self.augment = source, augment or PositiveAugment()
        self.test_fraction, self.split_seed = test_fraction, split_seed
        self.domains_per_batch, self.per_domain = domains_per_batch, per_domain
        self.batches_per_epoch, self.eval_batch_size = batches_per_epoch, eval_batch_size
        self.num_workers, self.pin_memory, self.seed = num_workers, pin_memory, seed
        self.batching, self.batch_size, self.val_fraction = batching, batch_size, val_fraction
        self.min_domain_images = min_domain_images
        self.data: DomainData | None = None
        self.train_index = self.val_index = self.test_index = np.zeros(0, dtype=np.int64)

    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            self.data = self.source.load(self.split_seed)
            domains = self.data.domains
            train, test = stratified_split(domains, len(domains), self.test_fraction, self.split_seed, "numpy")
            kept, val = stratified_split(domains[train], len(train), self.val_fraction, self.split_seed + 1, "numpy")
            train = np.asarray(train, dtype=np.int64)
            self.train_index, self.val_index = train[kept], train[val]
            if self.min_domain_images:
                sizes = np.bincount(domains)
                self.train_index = self.train_index[sizes[domains[self.train_index]] >= self.min_domain_images]
            self.test_index = np.asarray(test, dtype=np.int64)

    @property
    def num_domains(self) -> int:
        self.setup()
        assert self.data is not None
        return len(self.data.domain_names)

    @property
    def factor_levels(self) -> dict[str, int]:
        self.setup()
        assert self.data is not None
        return dict(self.data.factor_levels)

    @property
    def continuous_factors(self) -> list[str]:
        """Names of the factors probed by regression (lower L1 error is better)."""
        self.setup()
        assert self.data is not None
        return sorted(self.data.continuous)

    @property
    def image_size(self) -> int:
        self.setup()
        assert self.data is not None
        return int(self.data.images.shape[1])

    def has_test_data(self) -> bool:
        self.setup()
        return len(self.test_index) > 0

    def has_val_data(self) -> bool:
        self.setup()
        return len(self.val_index) > 0

    def train_dataloader(self) -> DataLoader:
        self.setup()
        assert self.data is not None
        rank, world = self.distributed_rank()
        sampler = BalancedDomainBatchSampler(self.data.domains[self.train_index], self.domains_per_batch,
                                             self.per_domain, rank, world, self.seed, self.batches_per_epoch,
                                             self.batching, self.batch_size)
        dataset = WholeBatches(DomainDataset(self.data, self.train_index, self.augment))
        return self.make_loader(dataset, None, shuffle=False, sampler=sampler)

    def feature_dataloader(self, split: str = "train") -> DataLoader:
        """Un-augmented images of ``split`` (train | val | eval), every sample once across ranks, in order."""
        self.setup()
        assert self.data is not None
        index = {"train": self.train_index, "val": self.val_index, "eval": self.test_index}[split]
        return self.make_loader(DomainDataset(self.data, index, None), self.eval_batch_size, shuffle=False,
                                persistent_workers=False)

    def test_dataloader(self) -> DataLoader:
        return self.feature_dataloader("eval")
