"""No-reference image quality of derained real photographs: NIQE and BRISQUE, MATLAB-calibrated (pyiqa's
``niqe_matlab`` / ``brisque_matlab``), of the rainy input and of the output (lower is better for both).

Deraining papers score real rain, which has no ground truth, with these; users of other deraining code report
that published figures reproduce only with the MATLAB versions and the same resizing. The rule here: each image is
scored at its own resolution, never resized, after 8-bit quantisation (as the saved PNG holds it); RGB goes to
luma inside pyiqa (MATLAB ``rgb2ycbcr``); NIQE needs at least 96 x 96 pixels (its block size), and smaller images
are left out and counted. Test: images without a target (``only_unpaired``; real rain), logged as ``test/niqe``,
``test/niqe_rainy``, ``test/brisque``, ``test/brisque_rainy``. Predict (``eval.py mode=predict``): every image,
written to ``metrics.json`` as ``predict/niqe`` ...

Parameters: pyiqa reads ``niqe_matlab_params.mat`` and ``brisque_matlab.mat`` from its weight cache
(``<torch hub dir>/pyiqa``) and downloads them when absent. Offline, ``params_dir`` names a folder holding them
(copied into the cache once). When pyiqa or a file is missing, one warning line names what and where from and
the metrics are skipped, or, with ``required: true``, the run stops with that line.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric, SumMetric

from callbacks.base import ReportingCallback
from contrastlab.errors import ConfigError, MissingPathError, UserError
from lightning_modules.base import BaseModule
from lightning_modules.components.numerics import full_precision
from lightning_modules.components.restoration_eval import quantize

PARAMETER_FILES = {"niqe": "niqe_matlab_params.mat", "brisque": "brisque_matlab.mat"}
SOURCE = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights (pyiqa's weight store)"
MIN_SIDE = 96  # NIQE's block size


def matlab_metric(name: str, params_dir: str | None, allow_download: bool) -> nn.Module:
    """pyiqa's ``<name>_matlab`` metric, its parameter file taken from ``params_dir`` when pyiqa's cache lacks it."""
    try:
        import pyiqa
        from pyiqa.utils.download_util import DEFAULT_CACHE_DIR
    except ImportError:
        raise ConfigError("the no-reference metrics need pyiqa: pip install -e '.[iqa]' (or remove "
                          "callbacks.noreference)") from None
    filename = PARAMETER_FILES[name]
    cached = Path(DEFAULT_CACHE_DIR) / filename
    if not cached.is_file():
        local = Path(params_dir).expanduser() / filename if params_dir else None
        if local is not None and local.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, cached)
        elif not allow_download:
            where = f"'{local}' (config key `callbacks.noreference.params_dir`)" if local else f"'{cached}'"
            raise MissingPathError(f"{name.upper()} needs its parameter file {where}; it comes from {SOURCE} as "
                                   f"{filename}: put it there, or set allow_download=true with network access")
    return pyiqa.create_metric(f"{name}_matlab", device="cpu", as_loss=False)


class NoReferenceQuality(ReportingCallback):
    """Args:
        metrics: which of ``niqe`` / ``brisque``.
        params_dir: a folder holding the parameter files (offline use); null: pyiqa's cache only.
        allow_download: let pyiqa download missing parameter files.
        only_unpaired: at test time score only images without a target (real rain).
        required: stop the run when pyiqa or a parameter file is missing (false: warn once, score nothing).
    """

    def __init__(self, metrics: Sequence[str] = ("niqe", "brisque"), params_dir: str | None = None,
                 allow_download: bool = False, only_unpaired: bool = True, required: bool = False) -> None:
        unknown = set(metrics) - set(PARAMETER_FILES)
        if unknown:
            raise ConfigError(f"`callbacks.noreference.metrics`: unknown {sorted(unknown)}; one of "
                              f"{sorted(PARAMETER_FILES)}")
        self.names, self.params_dir, self.allow_download = list(metrics), params_dir, allow_download
        self.only_unpaired, self.required = only_unpaired, required
        self.available = True
        self.scorers: dict[str, nn.Module] = {}
        self.means: dict[str, MeanMetric] = {}
        self.skipped = SumMetric()
        self.predict_metrics: dict[str, float] = {}

    def summary_lines(self, metrics: dict[str, float]) -> list[str]:
        shown = [f"{n.upper()} {metrics[f'test/{n}_rainy']:.3f} -> {metrics[f'test/{n}']:.3f}" for n in self.names
                 if f"test/{n}" in metrics]
        return [f"real rain, no reference (rainy -> derained, lower is better): {', '.join(shown)}"] if shown else []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not (isinstance(pl_module, BaseModule) and pl_module.supports("restore")):
            self.available = False  # nothing derained to score (eval.py with another method)
        if not self.scorers and self.available:
            try:
                self.scorers = {n: matlab_metric(n, self.params_dir, self.allow_download) for n in self.names}
            except UserError as error:
                if self.required:
                    raise
                self.available = False
                rank_zero_warn(f"no-reference metrics skipped: {error}")
        for name in self.names:
            for key in (name, f"{name}_rainy"):
                self.means[key] = MeanMetric().to(pl_module.device)
        self.skipped = self.skipped.to(pl_module.device)

    def _update(self, outputs: Any, batch: dict[str, Any], device: torch.device) -> None:
        if not self.scorers or not isinstance(outputs, dict) or "image" not in outputs:
            return
        derained, rainy = outputs["image"], (batch["rainy"] + 1) / 2
        if min(rainy.shape[-2:]) < MIN_SIDE:
            self.skipped.update(torch.tensor(float(rainy.shape[0]), device=device))
            return
        with full_precision(device), torch.no_grad():
            for name, scorer in self.scorers.items():
                for key, images in ((name, derained), (f"{name}_rainy", rainy)):
                    scores = scorer(quantize(images.float()).cpu()).reshape(-1)
                    self.means[key].update(scores.to(device))

    def _results(self, stage: str) -> dict[str, float]:
        with warnings.catch_warnings():  # a rank (or the run) without scored images: NaN, dropped below
            warnings.simplefilter("ignore")
            results = {f"{stage}/{k}": float(m.compute()) for k, m in self.means.items()}
            skipped = int(self.skipped.compute())
        results = {k: v for k, v in results.items() if v == v}
        if skipped:
            rank_zero_info(f"[contrastlab] NIQE / BRISQUE: {skipped} image(s) under {MIN_SIDE} px left out")
        for metric in (*self.means.values(), self.skipped):
            metric.reset()
        return results

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if not (self.only_unpaired and "target" in batch):
            self._update(outputs, batch, pl_module.device)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        results = self._results("test")
        if results:
            pl_module.log_dict(results)

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update(outputs, batch, pl_module.device)

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.predict_metrics = self._results("predict")
