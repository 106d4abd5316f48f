"""Image grids reach the loggers that take images and the run folder; predictions keep the input names."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from callbacks.image_logging import publish_grid
from callbacks.prediction_writer import ImagePredictionWriter


def test_grid_is_saved_and_sent_to_tensorboard(tmp_path: Path) -> None:
    tensorboard = TensorBoardLogger(str(tmp_path / "tb"), name="", version="")
    trainer = pl.Trainer(default_root_dir=str(tmp_path), logger=[CSVLogger(str(tmp_path)), tensorboard],
                         accelerator="cpu", enable_progress_bar=False)
    grid = torch.rand(3, 20, 30)
    path = publish_grid(trainer, grid, "val/grid", "grid.png")
    assert path == tmp_path / "images" / "grid.png" and path.exists()
    tensorboard.experiment.flush()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert "val/grid" in events.Tags()["images"]


def test_prediction_writer_keeps_file_names(tmp_path: Path) -> None:
    trainer = pl.Trainer(default_root_dir=str(tmp_path), logger=False, accelerator="cpu")
    writer = ImagePredictionWriter("out")
    writer.on_predict_batch_end(trainer, None, {"name": ["rain_01.png", "b.jpg"], "image": torch.rand(2, 3, 8, 8)},
                                None, 0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.jpg", "rain_01.png"]
