"""Send an image grid to every logger that takes images and save it as PNG in the run directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from datamodules.images import save_image


def publish_grid(trainer: pl.Trainer, grid: torch.Tensor, key: str, filename: str) -> Path:
    """Save ``grid`` (3, H, W) in [0, 1] to ``<run dir>/images/<filename>`` and log it under ``key``.

    W&B and TensorBoard receive the image; loggers without image support (CSV) are skipped. Loggers are
    recognised by class name so that wandb is only imported when the user chose it.
    """
    path = save_image(grid, Path(trainer.default_root_dir) / "images" / filename)
    step = trainer.global_step
    for logger in trainer.loggers:
        kind = type(logger).__name__
        if kind == "WandbLogger":
            array = (grid.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
            logger.log_image(key=key, images=[array], step=step)
        elif kind == "TensorBoardLogger":
            logger.experiment.add_image(key, grid.clamp(0, 1).cpu(), global_step=step)
    return path
