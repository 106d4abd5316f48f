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


def test_learning_curves_plot_the_logged_values(make_cfg, tmp_path) -> None:
    import csv
    import json

    from conftest import NLCL_TINY

    from train import train

    cfg = make_cfg("experiment=nlcl_demo", *NLCL_TINY, "trainer.accelerator=cpu", "trainer.devices=1",
                   "trainer.max_epochs=2", "data.samples_per_epoch=4", "trainer.check_val_every_n_epoch=1",
                   "trainer.log_every_n_steps=1", "data.val_images=1", "test=false", output_dir=tmp_path / "run")
    train(cfg)
    images = tmp_path / "run" / "images"
    png = images / "learning_curves.png"
    assert png.stat().st_size > 1000
    plotted = json.loads((images / "learning_curves.json").read_text())
    with (tmp_path / "run" / "csv" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for key in ("val/psnr", "train/loss"):
        logged = [[int(float(r["step"])), float(r[key])] for r in rows if r.get(key)]
        assert plotted[key] == sorted(logged) and len(logged) >= 2


def test_labelled_grids_carry_column_titles_and_row_names() -> None:
    from callbacks.image_logging import labelled_grid

    tiles = torch.ones(6, 3, 40, 40)  # white tiles: any dark pixel outside them is text
    plain = labelled_grid(tiles, 3, ["", "", ""], ["", ""])
    named = labelled_grid(tiles, 3, ["rainy", "background", "rain layer"], ["1.png", "2.png"])
    assert plain.shape == named.shape and plain.min() == 1.0
    band, margin = named.shape[1] - 86, named.shape[2] - 126  # grid of 2 x 3 tiles, padding 2
    assert named[:, :band, margin:].min() < 0.5  # the titles above the columns
    assert named[:, band:, :margin].min() < 0.5  # the names left of the rows
    assert named[:, band:, margin:].min() == 1.0  # the tiles untouched
