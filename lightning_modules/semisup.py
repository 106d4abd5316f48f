"""Semi-supervised fine-tuning (HCSC ``eval_semisup.py``; the 1 % / 10 % ImageNet protocol of SimCLR and PCL).

The whole pretrained trunk and a new linear head are trained on the labelled part of the training split
(``data.label_list`` or ``data.label_fraction``) and scored on the held-out split (top-1 / top-5). Unlike the
linear protocol the trunk is trainable and its BatchNorm statistics update; the trunk and the head have their own
learning rates (official: 0.005 and 0.02 at batch 256, SGD momentum 0.9, no weight decay, x0.1 at epochs 30 and 60
of 70).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lightning_modules.base import OptimizerFactory
from lightning_modules.components.backbones import Backbone
from lightning_modules.linear_probe import LinearProbe


class SemiSupervisedFineTune(LinearProbe):
    """Reports ``test/semisup_top1`` / ``test/semisup_top5``.

    Args:
        backbone: the trunk, with ``checkpoint`` pointing at the pretraining run (null: random init, the baseline).
        trunk_lr / head_lr: learning rates of the trunk and of the new linear head.
        num_classes: classes; None reads ``trainer.datamodule.num_classes``.
    """

    def __init__(self, backbone: Backbone, trunk_lr: float = 0.005, head_lr: float = 0.02,
                 num_classes: int | None = None, optimizer: OptimizerFactory | None = None,
                 scheduler: dict[str, Any] | None = None, channels_last: bool = False, compile: bool = False) -> None:
        super().__init__(backbone, num_classes, optimizer, scheduler, channels_last, compile)
        self.metric_name = "semisup"
        self.save_hyperparameters(ignore=["backbone", "optimizer"], logger=False)
        # Trainable, and in train mode from the start: Lightning keeps a submodule's eval mode through fit, so
        # LinearProbe's frozen-BN eval mode would otherwise survive and the BN statistics never update.
        self.backbone.requires_grad_(True).train()

    def train(self, mode: bool = True) -> SemiSupervisedFineTune:
        nn.Module.train(self, mode)  # the trunk fine-tunes in train mode (LinearProbe keeps it in eval mode)
        return self

    def parameter_groups(self) -> list[dict[str, Any]]:
        assert self.classifier is not None
        return [{"params": list(self.backbone.parameters()), "lr": self.hparams.trunk_lr, "name": "trunk"},
                {"params": list(self.classifier.parameters()), "lr": self.hparams.head_lr, "name": "head"}]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert self.classifier is not None
        return self.classifier(self.backbone(self.format_input(images)).float())
