"""Write one output image per input, with the input's file name (``eval.py`` prediction mode, and the test
images of a restoration method)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from callbacks.base import ArtifactCallback
from datamodules.images import save_image


class ImagePredictionWriter(ArtifactCallback):
    """Save ``{"name": [...], "image": B x 3 x H x W in [0, 1]}`` predictions under ``folder``.

    Args:
        folder: output folder; relative paths are taken inside the run directory.
    """

    def __init__(self, folder: str = "predictions") -> None:
        super().__init__()
        self.folder = folder

    def _root(self, trainer: pl.Trainer) -> Path:
        folder = Path(self.folder)
        return folder if folder.is_absolute() else Path(trainer.default_root_dir) / folder

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        for name, image in zip(outputs["name"], outputs["image"]):
            self.written.append(save_image(image, self._root(trainer) / Path(name).name))


class TestOutputWriter(ImagePredictionWriter):
    """Save the test step's ``{"name": [...], "image": B x 3 x H x W in [0, 1]}`` outputs under ``folder``.

    Args:
        folder: output folder; relative paths are taken inside the run directory.
        enabled: write (NLCL: ``model.save_test_outputs``); off, the callback does nothing.
    """

    def __init__(self, folder: str = "test_outputs", enabled: bool = False) -> None:
        super().__init__(folder)
        self.enabled = enabled

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.enabled and isinstance(outputs, dict) and "image" in outputs:
            for name, image in zip(outputs["name"], outputs["image"]):
                self.written.append(save_image(image, self._root(trainer) / Path(name).name))
