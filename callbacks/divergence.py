"""Stop a run whose loss has diverged before it can save, evaluate or report a broken model."""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

import pytorch_lightning as pl
import torch

from contrastlab.checkpoints import newest_checkpoint
from contrastlab.errors import DivergenceError


class DivergenceGuard(pl.Callback):
    """Raise :class:`DivergenceError` on a non-finite loss, one above ``max_loss``, or one above ``max_ratio`` x
    its running median.

    The check runs after every optimisation step, before any epoch-end checkpoint, so the checkpoints on disk
    hold the last finite weights; the error names the step and the newest of them. ``train.py`` reports it as one
    line and writes ``metrics.json`` with ``status: diverged``.

    Args:
        monitor: the logged training loss to watch (``train/loss`` for every method); the step output's ``loss``
            is used when the module logs no such key.
        max_loss: stop when |loss| exceeds this value (the methods' losses are O(1-10); None: no ceiling).
        max_ratio: stop when |loss| exceeds this multiple of the median |loss| of the last ``window`` steps
            (None: non-finite losses only).
        window: steps in the running median.
        min_history: steps seen before the ratio test starts (early losses move fast).
    """

    def __init__(self, monitor: str = "train/loss", max_loss: float | None = 1.0e6, max_ratio: float | None = 1000.0,
                 window: int = 100, min_history: int = 20) -> None:
        self.monitor, self.max_loss, self.max_ratio, self.min_history = monitor, max_loss, max_ratio, min_history
        self._history: deque[float] = deque(maxlen=window)

    def _loss(self, trainer: pl.Trainer, outputs: Any) -> torch.Tensor | None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None and isinstance(outputs, dict):
            value = outputs.get("loss")
        elif value is None and isinstance(outputs, torch.Tensor):
            value = outputs
        return None if value is None else torch.as_tensor(value).detach().float()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = self._loss(trainer, outputs)
        if loss is None:
            return
        value = float(loss.mean())
        reason = None
        if not math.isfinite(value):
            reason = f"`{self.monitor}` is {value}"
        elif self.max_loss is not None and abs(value) > self.max_loss:
            reason = f"`{self.monitor}` = {value:.4g} is above max_loss={self.max_loss:g}"
        elif self.max_ratio and len(self._history) >= self.min_history:
            median = statistics.median(self._history)
            if abs(value) > self.max_ratio * max(median, 1e-12):
                reason = f"`{self.monitor}` = {value:.4g} is over {self.max_ratio:g}x its running median {median:.4g}"
        if reason is None:
            self._history.append(abs(value))
            return
        last_good = newest_checkpoint(trainer.default_root_dir)
        where = (f"last good checkpoint: {last_good} (resume from it with a lower learning rate)" if last_good
                 else "no checkpoint was written before it; lower the learning rate")
        raise DivergenceError(f"training diverged at step {trainer.global_step} (epoch {trainer.current_epoch}): "
                              f"{reason}; {where}")
