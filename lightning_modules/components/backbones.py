"""Encoders shared by the methods: torchvision ResNets (ImageNet or CIFAR stem, optional pretrained weights) and
a small convolutional encoder for CPU-scale data."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from lightning_modules.components.weights import load_matching_weights


class Backbone(nn.Module):
    """A trunk mapping images to a feature vector; ``feature_dim`` says how long."""

    feature_dim: int


class ResNetBackbone(Backbone):
    """torchvision ResNet without its classifier (global-average-pooled features).

    Args:
        name: ``resnet18`` | ``resnet34`` | ``resnet50`` | ...
        cifar_stem: 3x3 stride-1 first conv and no max-pool, for 32 px images (SimCLR/MoCo CIFAR practice).
        weights: torchvision weights name (``IMAGENET1K_V2``, ``DEFAULT``) or None (random init). Needs the
            weights cached locally or network access.
        checkpoint: a MoCo-style checkpoint to load the trunk from (keys ``module.encoder_q.*``, ``encoder_q.*``,
            or plain torchvision names); the projection head keys are ignored.
        zero_init_residual: zero the last BN of each block (the torchvision option).
    """

    def __init__(
        self,
        name: str = "resnet50",
        cifar_stem: bool = False,
        weights: str | None = None,
        checkpoint: str | None = None,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        net = torchvision.models.get_model(name, weights=weights, zero_init_residual=zero_init_residual)
        if cifar_stem:
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net
        if checkpoint:
            load_trunk_checkpoint(self.net, checkpoint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def load_trunk_checkpoint(net: nn.Module, path: str | Path, key: str = "model.backbone.checkpoint") -> None:
    """Load trunk weights from a MoCo / HCSC / contrastlab / torchvision checkpoint (strict on the trunk).

    Prefixes ``module.``, ``encoder_q.``, ``backbone.`` and ``net.`` are stripped; momentum-encoder and head keys
    match no trunk weight and are ignored.
    """
    load_matching_weights(net, path, key, prefixes=("module.", "encoder_q.", "backbone.", "net."))


class ConvBackbone(Backbone):
    """A small CNN for CPU-scale data: ``len(widths)`` stride-2 conv blocks (conv-BN-ReLU), global average pool.

    Args:
        widths: channels of each block (resolution halves at each).
        in_channels: image channels.
        checkpoint: a pretraining run's checkpoint to load the trunk from (as ``ResNetBackbone``).
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), in_channels: int = 3,
                 checkpoint: str | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for width in widths:
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.Conv2d(width, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            previous = width
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = previous
        if checkpoint:
            load_trunk_checkpoint(self.net, checkpoint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPHead(nn.Module):
    """Linear (-> BN) -> ReLU ... -> Linear projection head.

    Args:
        in_dim, hidden_dim, out_dim: sizes; ``num_layers`` = 1 gives a single linear layer.
        batch_norm: BN after every hidden linear (MoCo v2 / HCSC: off).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
