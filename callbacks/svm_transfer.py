"""Transfer by linear SVMs on frozen features (VOC07 classification; ``callbacks.evaluation.svm``) after testing.

The training split's features come from ``datamodule.feature_dataloader("train")``, the test split's from the
``test_step`` outputs; every rank embeds its own shard, rank 0 fits the SVMs. Logs ``test/<name>_map`` and the
per-class ``test/<name>_ap_<class>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from callbacks.base import ReportingCallback
from callbacks.evaluation.svm import DEFAULT_COSTS, svm_transfer_map
from callbacks.representation_eval import embed_loader
from datamodules.base import BaseDataModule, require_datamodule
from lightning_modules.base import require
from lightning_modules.components.distributed import gather_variable


class SVMTransfer(ReportingCallback):
    """Args:
        name: the metric prefix (``voc07``).
        costs: the SVM costs cross-validated per class (the benchmark's 26 by default).
        folds: cross-validation folds on the training split (3).
    """

    def __init__(self, name: str = "voc07", costs: Sequence[float] | None = None, folds: int = 3) -> None:
        self.name, self.costs, self.folds = name, tuple(costs or DEFAULT_COSTS), folds
        self._test: list[tuple[torch.Tensor, torch.Tensor]] = []

    def summary_lines(self, metrics: dict[str, float]) -> list[str]:
        key = f"test/{self.name}_map"
        return [f"{self.name} SVM transfer: mAP {metrics[key]:.4f}"] if key in metrics else []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require(pl_module, "embed", "svm_transfer")
        require_datamodule(trainer, BaseDataModule, "svm_transfer")

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._test = []

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if isinstance(outputs, dict) and "embedding" in outputs:
            self._test.append((outputs["embedding"].detach(), outputs["label"].to(pl_module.device)))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._test:
            return
        train_x, train_y = embed_loader(pl_module, trainer.datamodule.feature_dataloader("train"))
        train_x, train_y = gather_variable(train_x), gather_variable(train_y)
        test_x = gather_variable(torch.cat([x for x, _ in self._test]))
        test_y = gather_variable(torch.cat([y for _, y in self._test]))
        self._test = []
        if trainer.global_rank != 0:
            return
        scores = svm_transfer_map(train_x, train_y, test_x, test_y, self.costs, self.folds, seed=0)
        classes = getattr(trainer.datamodule, "classes", None) or [str(i) for i in range(train_y.shape[1])]
        metrics = {f"test/{self.name}_map": scores["map"]}
        metrics |= {f"test/{self.name}_ap_{classes[int(k[3:])]}": v for k, v in scores.items() if k.startswith("ap_")}
        pl_module.log_dict(metrics, rank_zero_only=True)
