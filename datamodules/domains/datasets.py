"""Domain datasets and DCoDR's batch sampler (balanced domains x images, or shuffled; one global batch shared
by the DDP ranks)."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, default_collate

from datamodules.domain_augment import PositiveAugment
from datamodules.domains.sources import DomainData


class DomainDataset(Dataset):
    """In-memory images with domains and factors; ``augment`` makes the positive view (training only)."""

    def __init__(self, data: DomainData, index: np.ndarray, augment: PositiveAugment | None) -> None:
        self.data, self.index, self.augment = data, np.asarray(index), augment

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = int(self.index[i])
        image = torch.from_numpy(self.data.images[j]).permute(2, 0, 1).float().div_(255.0)
        factors: dict[str, Any] = {k: int(v[j]) for k, v in self.data.factors.items()}
        factors.update({k: torch.from_numpy(v[j]) if v.ndim > 1 else float(v[j])
                        for k, v in self.data.continuous.items()})
        sample: dict[str, Any] = {"image": image, "domain": int(self.data.domains[j]), "index": i, "factors": factors}
        if self.augment is not None:
            sample["positive"] = self.augment(image)
        return sample


class WholeBatches(Dataset):
    """Dataset view whose items are whole batches: ``dataset[[i, j, ...]]`` is the collated batch.

    Paired with a sampler that yields index lists and ``batch_size=None``, each loader worker builds complete
    batches, and the sampler stays a ``DistributedSampler`` that Lightning leaves as it is.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]) -> dict[str, Any]:
        return default_collate([self.dataset[i] for i in indices])


class BalancedDomainBatchSampler(DistributedSampler):
    """DCoDR's training batches, each a *global* batch that the ranks share.

    ``balanced`` (DCoDR): ``domains_per_batch`` domains x ``per_domain`` images (4 x 32). Each batch picks its
    domains uniformly without replacement and takes the next ``per_domain`` unused images of each from that
    domain's shuffled list, reshuffled when it runs out (the official sampler). An image never appears twice in a
    batch: a domain with fewer images gives all it has, once. ``shuffled`` (the official ``class_negs=False``
    ablation, the standard contrastive baseline): consecutive slices of ``batch_size`` of one shuffle of every
    training image, whatever their domains.

    Every rank draws the same global batch (one generator seeded by seed and epoch) and takes every
    ``world_size``-th image of it from position ``rank``, the batch cut to a multiple of the world size first; the
    method gathers the ranks' codes, so the loss sees the same batch as one process would. Batches per epoch:
    training images / global batch (the official loader), whatever the number of ranks.
    """

    def __init__(self, domains: Sequence[int], domains_per_batch: int = 4, per_domain: int = 32, rank: int = 0,
                 world_size: int = 1, seed: int = 0, batches_per_epoch: int | None = None, mode: str = "balanced",
                 batch_size: int = 64) -> None:
        super().__init__(list(domains), num_replicas=world_size, rank=rank, shuffle=False, seed=seed)
        if mode not in ("balanced", "shuffled"):
            raise ValueError(f"`data.batching` must be balanced or shuffled, got {mode!r}")
        self.by_domain: dict[int, list[int]] = defaultdict(list)
        for i, d in enumerate(domains):
            self.by_domain[int(d)].append(i)
        self.domain_ids = sorted(self.by_domain)
        if domains_per_batch > len(self.domain_ids):
            domains_per_batch = len(self.domain_ids)  # fewer domains than asked (Edges2Shoes: 2)
        self.domains_per_batch, self.per_domain, self.mode = domains_per_batch, per_domain, mode
        self.global_batch = domains_per_batch * per_domain if mode == "balanced" else batch_size
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, 0
        self.total = len(domains)
        self.batches = batches_per_epoch or max(1, self.total // self.global_batch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def batch_size(self) -> int:
        """Images of one rank's share of a full global batch."""
        return self.global_batch // self.world_size

    def __len__(self) -> int:
        return self.batches

    def global_batches(self) -> Iterator[list[int]]:
        """The epoch's global batches, identical on every rank."""
        rng = random.Random(self.seed * 100_003 + self.epoch)
        if self.mode == "shuffled":
            order: list[int] = []
            for _ in range(self.batches):
                if len(order) < self.global_batch:
                    order = list(range(self.total))
                    rng.shuffle(order)
                yield order[:self.global_batch]
                order = order[self.global_batch:]
            return
        lists = {d: list(self.by_domain[d]) for d in self.domain_ids}
        cursor = {d: len(lists[d]) for d in self.domain_ids}  # force a shuffle at first use
        for _ in range(self.batches):
            batch = []
            for d in rng.sample(self.domain_ids, self.domains_per_batch):
                members = lists[d]
                take = min(self.per_domain, len(members))  # a small domain: all its images, each once
                if cursor[d] + take > len(members):
                    rng.shuffle(members)
                    cursor[d] = 0
                batch += members[cursor[d]:cursor[d] + take]
                cursor[d] += take
            yield batch

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            usable = len(batch) - len(batch) % self.world_size
            yield batch[:usable][self.rank::self.world_size]
