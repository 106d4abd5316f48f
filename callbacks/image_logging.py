"""Send an image grid to every logger that takes images and save it as PNG in the run directory."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from contrastlab.loggers import send_image
from datamodules.images import save_image


def publish_grid(trainer: pl.Trainer, grid: torch.Tensor, key: str, filename: str) -> Path:
    """Save ``grid`` (3, H, W) in [0, 1] to ``<run dir>/images/<filename>`` and log it under ``key`` to every
    logger that takes images (``contrastlab.loggers.send_image`` decides by what the logger offers)."""
    path = save_image(grid, Path(trainer.default_root_dir) / "images" / filename)
    for logger in trainer.loggers:
        send_image(logger, key, grid, trainer.global_step)
    return path
