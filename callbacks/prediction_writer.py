"""Write one output image per input, with the input's file name (``eval.py`` prediction mode, and the test
images of a restoration method)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from callbacks.base import ArtifactCallback
from datamodules.images import save_image


class _ImageWriter(ArtifactCallback):
    """Shared part of the writers: ``{"name": [...], "image": B x 3 x H x W in [0, 1]}`` outputs to files.

    Args:
        folder: output folder; relative paths are taken inside the run directory.
    """

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def _root(self, trainer: pl.Trainer) -> Path:
        folder = Path(self.folder)
        return folder if folder.is_absolute() else Path(trainer.default_root_dir) / folder

    def _write(self, trainer: pl.Trainer, outputs: dict[str, Any]) -> None:
        for name, image in zip(outputs["name"], outputs["image"]):
            self.written.append(save_image(image, self._root(trainer) / Path(name).name))


class ImagePredictionWriter(_ImageWriter):
    """Save the predict step's outputs under ``folder`` (``eval.py mode=predict``).

    Args:
        folder: output folder; relative paths are taken inside the run directory.
    """

    def __init__(self, folder: str = "predictions") -> None:
        super().__init__(folder)

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self._write(trainer, outputs)


class TestOutputWriter(_ImageWriter):
    """Save the test step's outputs under ``folder``; silent in prediction mode (that is the other writer's job).

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
            self._write(trainer, outputs)
