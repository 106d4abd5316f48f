"""A fourth method written only against the documented contracts (docs/extending.md): alignment + uniformity
(Wang & Isola, ICML 2020, Eq. 4-5) on two views, with a small trunk. The test suite runs it through the CLI."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lightning_modules.base import BaseModule, OptimizerFactory
from lightning_modules.components.backbones import Backbone


class AlignUniform(BaseModule):
    """L = E ||f(x) - f(x')||^2 + t_u log E exp(-2 ||f(x) - f(y)||^2), f unit-norm (Eq. 4 and 5).

    Args:
        backbone: the trunk.
        uniformity_weight: weight of the uniformity term (1).
        optimizer / scheduler: as ``BaseModule``.
    """

    def __init__(self, backbone: Backbone, uniformity_weight: float = 1.0, optimizer: OptimizerFactory | None = None,
                 scheduler: dict[str, Any] | None = None) -> None:
        super().__init__(optimizer, scheduler)
        self.backbone, self.uniformity_weight = backbone, uniformity_weight

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(images).float(), dim=1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        first, second = (self.embed(view) for view in batch["views"][:2])
        alignment = (first - second).pow(2).sum(1).mean()
        uniformity = torch.pdist(first).pow(2).mul(-2).exp().mean().log()
        loss = alignment + self.uniformity_weight * uniformity
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"embedding": self.embed(batch["image"]), "label": batch["label"]}
