"""DCoDR networks: the content encoder and the LORD-style AdaIN generator with per-domain embeddings
(DCoDR Sec. 3; docs/references.md, D1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.components.backbones import Backbone
from lightning_modules.components.weights import load_matching_weights


class ContentEncoder(nn.Module):
    """z = W2 W1 f(x): backbone features, Linear(F, hidden), Linear(hidden, content_dim), no non-linearity between
    (official ``Moco_Resnet50``: hidden = 2048, initialised from the first layer of the MoCo v2 head).

    Args:
        backbone: the trunk (ResNet-50, optionally with a MoCo v2 checkpoint; a small CNN at CPU scale).
        content_dim: size of the content code (128).
        hidden_dim: the intermediate linear layer (None: a single Linear(F, content_dim)).
        head_checkpoint: a MoCo v2 checkpoint whose ``encoder_q.fc.0`` initialises the hidden layer.
        mlp_head: the optional 3-layer head of the SmallNORB runs (its output is the code).
    """

    def __init__(self, backbone: Backbone, content_dim: int = 128, hidden_dim: int | None = 2048,
                 head_checkpoint: str | None = None, mlp_head: bool = False) -> None:
        super().__init__()
        self.backbone, self.content_dim = backbone, content_dim
        dims = [backbone.feature_dim] + ([hidden_dim] if hidden_dim else []) + [content_dim]
        self.projection = nn.Sequential(*(nn.Linear(a, b) for a, b in zip(dims, dims[1:])))
        layers: list[nn.Module] = []
        for _ in range(3):
            layers += [nn.Linear(content_dim, content_dim), nn.LeakyReLU()]
        self.head = nn.Sequential(*layers) if mlp_head else None
        if head_checkpoint:
            self._load_moco_head(head_checkpoint)

    def _load_moco_head(self, path: str) -> None:
        """The MoCo v2 head's first layer (``encoder_q.fc.0``) into the code projection's first layer."""
        load_matching_weights(self.projection[0], path, "model.encoder.head_checkpoint",
                              prefixes=("module.", "encoder_q.", "fc.0."))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.projection(self.backbone(x))
        return self.head(z) if self.head is not None else z


class AdaptiveInstanceNorm(nn.Module):
    """Instance normalisation with a per-sample affine transform given by the domain code."""

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, eps=1e-5) * scale[:, :, None, None] + bias[:, :, None, None]


class DomainGenerator(nn.Module):
    """LORD's generator: content code -> FC stem -> 4x4 map -> [upsample, conv, LReLU, AdaIN(domain)] x n -> image.

    Args:
        num_domains: rows of the domain embedding (training domains).
        image_size: output side (64 in the paper); n = log2(size / 4) up-sampling blocks.
        content_dim, domain_dim: code sizes (128, 256).
        channels: width of the convolutional trunk (256 in the paper; smaller at CPU scale).
        out_channels: image channels.
        head_channels: width of the 5 x 5 output convolutions (64 in the paper; the costliest layers at CPU scale).
    """

    def __init__(self, num_domains: int, image_size: int = 64, content_dim: int = 128, domain_dim: int = 256,
                 channels: int = 256, out_channels: int = 3, head_channels: int = 64) -> None:
        super().__init__()
        blocks = math.log2(image_size / 4)
        if blocks != int(blocks) or blocks < 1:
            raise ValueError(f"image size must be 4 x a power of two (8, 16, ..., 64, 128), got {image_size}")
        self.num_blocks, self.channels = int(blocks), channels
        self.domain_embedding = nn.Embedding(num_domains, domain_dim)
        nn.init.uniform_(self.domain_embedding.weight, -0.05, 0.05)
        self.modulation = nn.ModuleList(nn.Linear(domain_dim, 2 * channels) for _ in range(self.num_blocks))
        self.stem = nn.Sequential(nn.Linear(content_dim, 512), nn.LeakyReLU(), nn.Linear(512, 1024), nn.LeakyReLU(),
                                  nn.Linear(1024, channels * 16), nn.LeakyReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1),
                          nn.LeakyReLU()) for _ in range(self.num_blocks))
        self.adain = AdaptiveInstanceNorm()
        head: list[nn.Module] = [nn.Conv2d(channels, head_channels, 5, padding=2), nn.LeakyReLU()]
        if image_size >= 128:
            head += [nn.Conv2d(head_channels, head_channels, 5, padding=2), nn.LeakyReLU()]
        head += [nn.Conv2d(head_channels, out_channels, 7, padding=3), nn.Sigmoid()]
        self.head = nn.Sequential(*head)

    def forward(self, content: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """``content`` (B, content_dim) unit norm, ``domains`` (B,) ids -> images (B, C, size, size) in [0, 1]."""
        style = self.domain_embedding(domains)
        x = self.stem(content).view(content.shape[0], self.channels, 4, 4)
        for block, modulation in zip(self.blocks, self.modulation):
            params = modulation(style).view(-1, self.channels, 2)
            x = self.adain(block(x), scale=params[..., 1], bias=params[..., 0])
        return self.head(x)
