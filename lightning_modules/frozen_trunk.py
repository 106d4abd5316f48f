"""A pretrained trunk evaluated as it is, without training: the features of transfer evaluations (VOC07 SVMs).

The trunk is loaded from a checkpoint (``backbone.checkpoint``), frozen and kept in eval mode; ``embed`` gives its
L2-normalised pooled features and ``test_step`` hands them with their labels to the evaluation callbacks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lightning_modules.base import BaseModule
from lightning_modules.components.backbones import Backbone


class FrozenTrunk(BaseModule):
    """Args:
        backbone: the trunk, with ``checkpoint`` pointing at the pretraining run or a released file.
    """

    def __init__(self, backbone: Backbone, channels_last: bool = False) -> None:
        super().__init__(channels_last=channels_last)
        self.backbone = backbone.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> FrozenTrunk:
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(self.format_input(images)).float(), dim=1)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"embedding": self.embed(batch["image"]), "label": torch.as_tensor(batch["label"])}
