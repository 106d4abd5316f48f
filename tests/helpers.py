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
