"""A checkpoint on an exception that can never replace the run's real progress.

Lightning's ``OnExceptionCheckpoint`` also saves when the run fails *before* the requested checkpoint was restored
(a wrong ``ckpt_path``, a bad data file), and its presence makes ``fit(ckpt_path=None)`` resume from the newest
file of the folder. This one saves only once training has started from the restored state, never when the
weights are not finite or the run was stopped by the divergence guard, and leaves the choice of what to resume
to ``contrastlab.checkpoints.resolve_ckpt_path``.
"""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info

from contrastlab.checkpoints import EXCEPTION_FILENAME
from contrastlab.errors import DivergenceError


def weights_are_finite(module: torch.nn.Module) -> bool:
    """True when every parameter and floating buffer is finite (one host sync)."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


class ExceptionCheckpoint(Checkpoint):
    """Save ``<dirpath>/on_exception.ckpt`` when training fails after it has started.

    Args:
        dirpath: the run's checkpoint folder.
        filename: the file's stem (``on_exception``; ``resolve_ckpt_path`` ranks such files below complete ones).
    """

    def __init__(self, dirpath: str, filename: str = EXCEPTION_FILENAME) -> None:
        if not filename:
            raise ValueError("the exception checkpoint needs a file name")
        self.dirpath, self.filename = str(dirpath), filename
        self._training_started = False

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + ".ckpt")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._training_started = True  # the requested checkpoint (if any) has been restored by now

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not self._training_started or isinstance(exception, DivergenceError):
            return
        if not weights_are_finite(pl_module):
            rank_zero_info("[contrastlab] no exception checkpoint: the weights are not finite")
            return
        trainer.save_checkpoint(self.ckpt_path)
        rank_zero_info(f"[contrastlab] saved the state at step {trainer.global_step} to {self.ckpt_path}")

    def state_dict(self) -> dict[str, Any]:
        return {}


class LastCheckpoint(ModelCheckpoint):
    """``<dirpath>/last.ckpt`` overwritten at the end of every training epoch (Lightning's ``save_last`` only
    saves when the periodic checkpoint does, so a run ending between intervals would keep older weights).

    Args:
        dirpath: the run's checkpoint folder.
    """

    def __init__(self, dirpath: str) -> None:
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                         save_on_train_epoch_end=True, enable_version_counter=False)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(kind="last")

