"""Domain datasets and the balanced domains x images-per-domain batch sampler (DDP-sharded)."""

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
    """Batches of ``domains_per_batch`` domains x ``per_domain`` images (DCoDR: 4 x 32).

    Each epoch, every domain's training indices are shuffled and dealt round-robin to the ranks, so ranks draw from
    disjoint subsets: no sample appears on two ranks within an epoch. Each batch picks its domains uniformly
    without replacement and takes the next ``per_domain`` unused indices of each (a domain's list is reshuffled
    when it would overrun, as the official sampler does; a domain smaller than ``per_domain`` is drawn with
    replacement). Every rank yields the same number of batches.
    """

    def __init__(self, domains: Sequence[int], domains_per_batch: int = 4, per_domain: int = 32, rank: int = 0,
                 world_size: int = 1, seed: int = 0, batches_per_epoch: int | None = None) -> None:
        super().__init__(list(domains), num_replicas=world_size, rank=rank, shuffle=False, seed=seed)
        self.by_domain: dict[int, list[int]] = defaultdict(list)
        for i, d in enumerate(domains):
            self.by_domain[int(d)].append(i)
        self.domain_ids = sorted(self.by_domain)
        if domains_per_batch > len(self.domain_ids):
            domains_per_batch = len(self.domain_ids)  # fewer domains than asked (Edges2Shoes: 2)
        self.domains_per_batch, self.per_domain = domains_per_batch, per_domain
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, 0
        total = len(domains)
        self.batches = batches_per_epoch or max(1, total // (self.domains_per_batch * per_domain * world_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def batch_size(self) -> int:
        return self.domains_per_batch * self.per_domain

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[int]]:
        shared = random.Random(self.seed * 100_003 + self.epoch)  # the same split on every rank
        own: dict[int, list[int]] = {}
        for d in self.domain_ids:
            members = list(self.by_domain[d])
            shared.shuffle(members)
            own[d] = members[self.rank::self.world_size] or members  # a tiny domain is shared rather than lost
        rng = random.Random((self.seed * 100_003 + self.epoch) * 7919 + self.rank)
        cursor = {d: len(own[d]) for d in self.domain_ids}  # force a shuffle at first use
        for _ in range(self.batches):
            batch = []
            for d in rng.sample(self.domain_ids, self.domains_per_batch):
                members = own[d]
                if len(members) < self.per_domain:
                    batch += [rng.choice(members) for _ in range(self.per_domain)]
                    continue
                if cursor[d] + self.per_domain > len(members):
                    rng.shuffle(members)
                    cursor[d] = 0
                batch += members[cursor[d]:cursor[d] + self.per_domain]
                cursor[d] += self.per_domain
            yield batch
