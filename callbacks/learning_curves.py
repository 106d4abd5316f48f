"""Learning curves at the end of every training run: each monitored metric against the optimiser step.

The values are read back from the run's CSV log (``csv/metrics.csv``, kept across resumes by ``HistoryCSVLogger``),
so the plot shows exactly what was logged. One panel per metric, axes labelled, titled with the run folder; saved
as ``<run>/images/learning_curves.png`` with its data in ``learning_curves.json``, and sent to every logger that
takes images (W&B, TensorBoard).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn

from callbacks.base import ArtifactCallback
from callbacks.image_logging import publish_grid


def read_series(metrics_csv: Path, keys: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    """``{key: [(step, value), ...]}`` for the ``keys`` present in a Lightning CSV log, in step order."""
    series: dict[str, list[tuple[int, float]]] = {}
    with metrics_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            for key in keys:
                value = row.get(key)
                if value not in (None, "") and row.get("step") not in (None, ""):
                    series.setdefault(key, []).append((int(float(row["step"])), float(value)))
    return {k: sorted(v) for k, v in series.items()}


def render(series: dict[str, list[tuple[int, float]]], title: str) -> np.ndarray:
    """An RGB uint8 image (H, W, 3) with one labelled panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.4), squeeze=False)
    for axis, (key, points) in zip(axes[0], series.items()):
        steps, values = zip(*points)
        axis.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=title)
        axis.set_xlabel("optimiser step")
        axis.set_ylabel(key)
        axis.set_title(key)
        axis.grid(alpha=0.3)
        axis.ticklabel_format(axis="y", useOffset=False)
        axis.legend(fontsize=7)
    figure.suptitle(f"learning curves: {title}", fontsize=9)
    figure.tight_layout()
    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return image


class LearningCurves(ArtifactCallback):
    """Plot the monitored metrics against the step when training ends (also after a stop by ``max_time``).

    Args:
        monitors: logged keys to plot when present (the kNN / PSNR monitors and the training loss).
        filename: the PNG's name in ``<run>/images/``.
    """

    def __init__(self, monitors: Sequence[str] = ("val/knn_top1", "val/psnr", "val/psnr_y", "val/domain_acc",
                                                   "val/content_acc", "train/loss"),
                 filename: str = "learning_curves.png") -> None:
        super().__init__()
        self.monitors, self.filename = list(monitors), filename

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        csv_loggers = [logger for logger in trainer.loggers if isinstance(logger, CSVLogger)]
        if not csv_loggers:
            rank_zero_warn("learning curves need the CSV logger (logger=csv or logger=many); none was drawn")
            return
        logger = csv_loggers[0]
        logger.save()  # flush the rows still in memory
        metrics_csv = Path(logger.log_dir) / "metrics.csv"
        series = read_series(metrics_csv, self.monitors) if metrics_csv.is_file() else {}
        if not series:
            return
        run = Path(trainer.default_root_dir)
        title = f"{run.parent.parent.name} / {run.name}" if run.parent.name in ("runs", "multiruns") else run.name
        image = render(series, title)
        grid = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
        self.last_path = str(publish_grid(trainer, grid, "train/learning_curves", self.filename))
        data_path = Path(self.last_path).with_suffix(".json")
        data_path.write_text(json.dumps({k: [[s, v] for s, v in points] for k, points in series.items()}, indent=1))
