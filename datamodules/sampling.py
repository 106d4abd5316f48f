"""Samplers shared by the datamodules."""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import DistributedSampler


class ShardSampler(DistributedSampler):
    """Rank r of w reads indices r, r + w, r + 2w, ... : every sample exactly once across ranks.

    Unlike ``DistributedSampler`` it never pads with duplicates, so evaluation metrics that are reduced across
    ranks (torchmetrics states, kNN counts) equal the single-process ones exactly. It *is* a
    ``DistributedSampler``, so Lightning uses it as it is instead of sharding it a second time.
    """

    def __init__(self, dataset: Sized, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=False, drop_last=False)
        self.length = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.num_replicas))
