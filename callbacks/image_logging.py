"""Send an image grid to every logger that takes images and save it as PNG in the run directory; label a grid's
columns and rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torchvision.utils import make_grid

from contrastlab.loggers import send_image
from datamodules.images import save_image


def publish_grid(trainer: pl.Trainer, grid: torch.Tensor, key: str, filename: str) -> Path:
    """Save ``grid`` (3, H, W) in [0, 1] to ``<run dir>/images/<filename>`` and log it under ``key`` to every
    logger that takes images (``contrastlab.loggers.send_image`` decides by what the logger offers)."""
    path = save_image(grid, Path(trainer.default_root_dir) / "images" / filename)
    for logger in trainer.loggers:
        send_image(logger, key, grid, trainer.global_step)
    return path


def labelled_grid(tiles: torch.Tensor, columns: int, column_titles: Sequence[str], row_names: Sequence[str],
                  padding: int = 2) -> torch.Tensor:
    """``tiles`` (N, 3, h, w) in [0, 1], row by row, as one (3, H, W) image with a title above each column and a
    name left of each row (PIL's built-in font; names longer than the margin are shortened from the left)."""
    from PIL import Image, ImageDraw, ImageFont

    grid = make_grid(tiles.float().clamp(0, 1), nrow=columns, padding=padding, pad_value=1.0)
    font = ImageFont.load_default()
    band, tile_w = 14, tiles.shape[-1]
    margin = max(60, min(140, 7 * max((len(n) for n in row_names), default=0)))
    canvas = Image.new("RGB", (margin + grid.shape[2], band + grid.shape[1]), "white")
    body = (grid.permute(1, 2, 0).mul(255).round().byte().cpu().numpy())
    canvas.paste(Image.fromarray(body), (margin, band))
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(column_titles):
        left = margin + padding + j * (tile_w + padding)
        draw.text((left + 1, 1), _fit(draw, title, font, tile_w), fill="black", font=font)
    for i, name in enumerate(row_names):
        top = band + padding + i * (tiles.shape[-2] + padding) + tiles.shape[-2] // 2 - 5
        draw.text((2, top), _fit(draw, name, font, margin - 4), fill="black", font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 255.0


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    """``text`` shortened from the left (``...`` + its end) until it fits ``width`` pixels."""
    while len(text) > 3 and draw.textlength(text, font=font) > width:
        text = "..." + text[4:]
    return text
