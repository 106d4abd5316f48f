"""A CSV logger whose history survives a resume (Lightning's deletes ``metrics.csv`` when it starts again)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class _HistoryWriter(ExperimentWriter):
    """Appends to an existing ``metrics.csv`` (its header is kept and widened when new keys appear)."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if path.is_file():
            with path.open(newline="") as handle:
                header = next(csv.reader(handle), [])
            self.metrics_keys = sorted(header)


class HistoryCSVLogger(CSVLogger):
    """``CSVLogger`` that continues the file of the run it resumes instead of starting it over.

    ``train.py`` first drops the rows logged after the restored checkpoint's step (they are logged again), so
    a killed-and-resumed run has the same rows as an uninterrupted one.
    """

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self._is_rank_zero():
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _HistoryWriter(log_dir=self.log_dir)
        return super().experiment

    @staticmethod
    def _is_rank_zero() -> bool:
        from pytorch_lightning.utilities import rank_zero_only

        return rank_zero_only.rank == 0


def truncate_csv_history(path: str | Path, last_step: int) -> int:
    """Keep the rows of ``path`` with ``step <= last_step``; return how many were dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames or [], list(reader)
    kept = [row for row in rows if not row.get("step") or float(row["step"]) <= last_step]
    if len(kept) != len(rows):
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)
    return len(rows) - len(kept)


def send_image(logger: Any, key: str, grid: torch.Tensor, step: int) -> bool:
    """Log ``grid`` (3, H, W) in [0, 1] to ``logger`` by what it can take; False when it takes no images.

    Lightning's image API (``log_image(key, images, step)``: W&B, Neptune) gets a uint8 array; a logger whose
    experiment is a TensorBoard-style writer (``add_image``) gets the tensor; CSV and others are skipped.
    """
    image = grid.detach().float().clamp(0, 1).cpu()
    log_image = getattr(logger, "log_image", None)
    if callable(log_image):
        log_image(key=key, images=[(image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)], step=step)
        return True
    add_image = getattr(getattr(logger, "experiment", None), "add_image", None)
    if callable(add_image):
        add_image(key, image, global_step=step)
        return True
    return False
