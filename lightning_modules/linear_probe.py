"""Linear evaluation of a frozen, pretrained trunk: the papers' ImageNet protocol (HCSC ``eval_lincls_imagenet``).

The trunk is loaded from a pretraining checkpoint, frozen and kept in eval mode (BN statistics fixed); only a
linear classifier (weights N(0, 0.01), bias 0) is trained on augmented views. Reports ``test/linear_top1`` and
``test/linear_top5`` with torchmetrics.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from datamodules.base import BaseDataModule
from lightning_modules.base import BaseModule, OptimizerFactory
from lightning_modules.components.backbones import Backbone


class LinearProbe(BaseModule):
    """Args:
        backbone: the trunk, with ``checkpoint`` pointing at the pretraining run (required for a real probe).
        num_classes: classes; None reads ``trainer.datamodule.num_classes``.
    """

    compile_targets = ("backbone",)
    metric_name = "linear"  # test/<metric_name>_top1, test/<metric_name>_top5

    def __init__(self, backbone: Backbone, num_classes: int | None = None, optimizer: OptimizerFactory | None = None,
                 scheduler: dict[str, Any] | None = None, channels_last: bool = False, compile: bool = False) -> None:
        super().__init__(optimizer, scheduler, channels_last, compile)
        self.save_hyperparameters(ignore=["backbone", "optimizer"], logger=False)
        self.backbone = backbone.requires_grad_(False).eval()
        self.classifier: nn.Linear | None = None
        if num_classes is not None:
            self._build(num_classes)

    def _build(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.backbone.feature_dim, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)
        self.test_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.test_top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")

    def setup(self, stage: str) -> None:
        if self.classifier is None:
            datamodule = self.trainer.datamodule
            num_classes = datamodule.num_classes if isinstance(datamodule, BaseDataModule) else None
            if not num_classes:
                raise ValueError("linear evaluation needs labeled data (set `model.num_classes` or use labels)")
            self._build(num_classes)

    def summary_lines(self, metrics: dict[str, float]) -> list[str]:
        key = f"test/{self.metric_name}_top1"
        return [f"held-out {self.metric_name} top-1 {metrics[key]:.4f}, top-5 "
                f"{metrics.get(f'test/{self.metric_name}_top5', float('nan')):.4f}"] if key in metrics else []

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.backbone.eval()  # frozen BN statistics, as the protocol prescribes
        return self

    def parameter_groups(self) -> list[dict[str, Any]]:
        assert self.classifier is not None
        return [{"params": list(self.classifier.parameters())}]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.backbone(self.format_input(images))
        assert self.classifier is not None
        return self.classifier(features.float())

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(self.format_input(images)).float(), dim=1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch["views"][0]), batch["label"])
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch["label"].shape[0])
        return loss

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self(batch["image"])
        self.test_top1.update(logits, batch["label"])
        self.test_top5.update(logits, batch["label"])
        name = self.metric_name
        self.log_dict({f"test/{name}_top1": self.test_top1, f"test/{name}_top5": self.test_top5},
                      batch_size=batch["label"].shape[0])
