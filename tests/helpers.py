"""Test-only callbacks, importable from Hydra configs as ``helpers.<name>`` (tests/ is on sys.path)."""

from __future__ import annotations

import pytorch_lightning as pl


class CrashAtEpoch(pl.Callback):
    """Raise at the start of ``epoch``: a job killed after its last checkpoint."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError(f"simulated kill at the start of epoch {self.epoch}")


class PoisonWeightsAtEpoch(pl.Callback):
    """Set one weight to NaN at the start of ``epoch``: the next step's loss is not finite (a diverged run)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            next(pl_module.parameters()).data.fill_(float("nan"))


class RecordDDPBroadcast(pl.Callback):
    """Write what DDP re-sends from rank 0 before every forward (buffer names and bytes) to ``path`` (rank 0)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import json

        wrapper = trainer.strategy.model
        broadcast = bool(getattr(wrapper, "broadcast_buffers", False))
        buffers = {name: b.numel() * b.element_size() for name, b in pl_module.named_buffers()} if broadcast else {}
        if trainer.is_global_zero:
            with open(self.path, "w") as handle:
                json.dump({"wrapper": type(wrapper).__name__, "broadcast_buffers": broadcast,
                           "bytes_per_step": sum(buffers.values()), "names": sorted(buffers)}, handle)


class RecordEpochDraws(pl.Callback):
    """Append (epoch, 4 draws of torch.rand) at every training epoch's start to ``<path>.rank<r>`` (JSON lines)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import json

        import torch

        with open(f"{self.path}.rank{trainer.global_rank}", "a") as handle:
            handle.write(json.dumps([trainer.current_epoch, torch.rand(4).tolist()]) + "\n")
