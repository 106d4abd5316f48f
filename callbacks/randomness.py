"""Random streams per rank and per epoch: distinct across DDP ranks, identical across a resume.

``train.py`` seeds every process alike before the networks are built (identical initialisation on every rank).
From then on each draw made in the step (``DeviceViews``' crops, jitter and flips, HCSC's Bernoulli selection
masks, NLCL's anchors) must differ between ranks, or a global batch of 8 x 32 gets 32 distinct augmentations.
At the start of every training epoch this callback reseeds torch (CPU and CUDA), numpy and Python's ``random`` from
(run seed, global rank, epoch). A run resumed from an epoch-end checkpoint therefore draws, on every rank, the
same numbers as the uninterrupted run, without storing any generator state; a mid-epoch (exception) resume
restarts that epoch's streams (deterministic, not identical). Loader workers derive their seeds from the
reseeded main process and their own rank and id (Lightning's ``seed_everything(workers=True)``).
"""

from __future__ import annotations

import random

import numpy as np
import pytorch_lightning as pl
import torch


def stream_seed(seed: int, rank: int, epoch: int) -> int:
    """A 63-bit seed for (run seed, global rank, epoch), well spread by numpy's SeedSequence."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(rank), int(epoch), 0xC0DE]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def reseed(seed: int) -> None:
    """Seed torch (every device), numpy and Python's ``random`` with ``seed`` (public APIs only)."""
    torch.manual_seed(seed)  # also every CUDA device
    np.random.seed(seed % 2**32)
    random.seed(seed)


class RankRandomness(pl.Callback):
    """Args:
        seed: the run's seed (``${seed}``).
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        reseed(stream_seed(self.seed, trainer.global_rank, trainer.current_epoch))
