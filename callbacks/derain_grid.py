"""Deraining image grids: rainy | background B^ | rain layer R^ | clean (when known), one row per image, the
columns titled and each row named by its file."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader

from callbacks.base import ArtifactCallback
from callbacks.image_logging import labelled_grid, publish_grid
from datamodules.rain import RainDataModule
from lightning_modules.base import require


class DerainGrid(ArtifactCallback):
    """Render the model's decomposition of a fixed set of held-out images (through ``pl_module.restore``).

    Images come from the validation set (the first ``max_images``), or from the first training batch when
    there is none. The rain layer is shown as R^/2 in image units, so additive rain is bright on black.

    Args:
        every_n_epochs: render after every n-th validation (and always after testing).
        max_images: rows of the grid.
        size: centre-crop side of each tile (None = as the loader gives them; must then share one size).
    """

    def __init__(self, every_n_epochs: int = 1, max_images: int = 4, size: int | None = 256) -> None:
        super().__init__()
        self.every_n_epochs, self.max_images, self.size = every_n_epochs, max_images, size
        self._fallback: dict[str, torch.Tensor] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require(pl_module, "restore", "derain_grid")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._fallback is None:
            self._fallback = {"rainy": batch["rainy"][: self.max_images].detach().cpu()}

    def _crop(self, image: torch.Tensor) -> torch.Tensor:
        if self.size is None:
            return image
        h, w = image.shape[-2:]
        size_h, size_w = min(self.size, h), min(self.size, w)
        top, left = (h - size_h) // 2, (w - size_w) // 2
        crop = image[..., top:top + size_h, left:left + size_w]
        if (size_h, size_w) != (self.size, self.size):
            crop = torch.nn.functional.pad(crop, (0, self.size - size_w, 0, self.size - size_h), value=-1.0)
        return crop

    def _images(self, trainer: pl.Trainer) -> tuple[torch.Tensor, torch.Tensor | None, list[str]] | None:
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, list) and loaders else loaders
        dataset = loader.dataset if isinstance(loader, DataLoader) else None
        datamodule = trainer.datamodule
        if dataset is None and isinstance(datamodule, RainDataModule) and datamodule.splits is not None:
            val = datamodule.val_dataloader()  # before the first validation, Lightning has not built it yet
            dataset = val.dataset if isinstance(val, DataLoader) else None
        if dataset is not None and len(dataset) > 0:
            samples = [dataset[i] for i in range(min(self.max_images, len(dataset)))]
            rainy = torch.stack([self._crop(s["rainy"]) for s in samples])
            clean = (torch.stack([self._crop(s["target"]) for s in samples])
                     if all("target" in s for s in samples) else None)
            return rainy, clean, [str(s.get("name", i)) for i, s in enumerate(samples)]
        if self._fallback is not None:
            rainy = self._fallback["rainy"]
            return rainy, None, [f"training crop {i}" for i in range(rainy.shape[0])]
        return None

    @rank_zero_only
    def render(self, trainer: pl.Trainer, pl_module: pl.LightningModule, filename: str, key: str) -> None:
        images = self._images(trainer)
        if images is None:
            return
        rainy, clean, names = images
        was_training = pl_module.training
        pl_module.eval()
        out = pl_module.restore(rainy.to(pl_module.device))
        pl_module.train(was_training)
        columns = [(rainy.cpu() + 1) / 2, (out["background"].cpu().clamp(-1, 1) + 1) / 2,
                   (out["rain"].cpu() / 2).clamp(0, 1)]
        titles = ["rainy", "background", "rain layer"]
        if clean is not None:
            columns.append((clean.cpu() + 1) / 2)
            titles.append("clean")
        tiles = torch.stack(columns, dim=1).flatten(0, 1)
        grid = labelled_grid(tiles, len(columns), titles, names)
        self.last_path = str(publish_grid(trainer, grid, key, filename))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self.render(trainer, pl_module, f"val_epoch{trainer.current_epoch:03d}.png", "val/grid")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.render(trainer, pl_module, "test_grid.png", "test/grid")
