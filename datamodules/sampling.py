"""Samplers shared by the datamodules."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Sampler


class ShardSampler(Sampler[int]):
    """Rank r of w reads indices r, r + w, r + 2w, ... : every sample exactly once across ranks.

    Unlike ``DistributedSampler`` it never pads with duplicates, so evaluation metrics that are reduced
    across ranks (torchmetrics states) equal the single-process ones exactly.
    """

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))
