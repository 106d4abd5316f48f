"""DCoDR losses (Kahana & Hoshen, ECCV 2022; Sec. 3; docs/references.md, D2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from lightning_modules.components.numerics import fp32, fp32_region


class DomainContrastiveLoss(nn.Module):
    """Domain-wise InfoNCE: an un-augmented anchor against its augmented positive, negatives = other anchors of
    the **same domain** only (``negatives="domain"``) or of any domain (``"all"``, standard contrastive).

        L_i = -s(a_i, p_i)/t + log( exp(s(a_i, p_i)/t) + sum_{j in N(i)} exp(s(a_i, a_j)/t) ),   L = mean_i L_i

    N(i): at most ``num_negatives`` admissible anchors drawn at random without replacement (all of them when
    fewer: 31 of a 4 x 32 batch). Cosine similarities, fp32 logits; one masked (B, B) matrix, no loop.
    With equal similarities the loss is log(K + 1).

    Args:
        temperature: t (0.2 Cars3D / SmallNORB / CelebA, 0.1 Shapes3D / Edges2Shoes).
        num_negatives: K, the most negatives per anchor (official 64).
        negatives: ``domain`` (DCoDR) or ``all`` (the standard-contrastive baseline; only the negative set differs).
        num_positives: 1 (the method) or 0 (the official ``--num-pos 0`` ablation: the positive similarity is the
            constant 1, so only the negatives' uniformity term trains; ``positives`` may then be None).
    """

    def __init__(self, temperature: float = 0.2, num_negatives: int | None = 64, negatives: str = "domain",
                 num_positives: int = 1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if negatives not in ("domain", "all"):
            raise ValueError(f"negatives must be 'domain' or 'all', got {negatives!r} (`model.negatives`)")
        if num_positives not in (0, 1):
            raise ValueError(f"num_positives must be 0 or 1, got {num_positives} (`model.num_positives`)")
        self.temperature, self.num_negatives, self.negatives = temperature, num_negatives, negatives
        self.num_positives = num_positives

    def negative_mask(self, domains: torch.Tensor) -> torch.Tensor:
        """(B, B) True where anchor j is a negative of anchor i."""
        n = domains.shape[0]
        allowed = ~torch.eye(n, dtype=torch.bool, device=domains.device)
        if self.negatives == "domain":
            allowed &= domains[:, None] == domains[None, :]
        if self.num_negatives is not None and self.num_negatives < n - 1:
            scores = torch.rand(n, n, device=domains.device).masked_fill(~allowed, -1.0)
            chosen = scores.topk(self.num_negatives, dim=1).indices
            picked = torch.zeros_like(allowed).scatter_(1, chosen, True)
            allowed &= picked
        return allowed

    @fp32_region
    def forward(self, anchors: torch.Tensor, positives: torch.Tensor | None, domains: torch.Tensor) -> torch.Tensor:
        a = F.normalize(fp32(anchors), dim=1)
        if self.num_positives:
            positive = (a * F.normalize(fp32(positives), dim=1)).sum(1, keepdim=True) / self.temperature
        else:  # --num-pos 0: similarity 1, a constant
            positive = a.new_full((a.shape[0], 1), 1.0 / self.temperature)
        negatives = (a @ a.T / self.temperature).masked_fill(~self.negative_mask(domains), float("-inf"))
        logits = torch.cat((positive, negatives), dim=1)
        return F.cross_entropy(logits, torch.zeros(a.shape[0], dtype=torch.long, device=a.device))


class ReconstructionLoss(nn.Module):
    """L1 + VGG16 perceptual distance (LORD / DCoDR): mean|x^ - x| + sum_l mean|phi_l(x^) - phi_l(x)|.

    Taps: relu1_2, relu2_2, relu3_2, relu4_3 and pool5 of torchvision's VGG16 ``features`` (the official layer
    ids 2, 7, 12, 21, 30 after its in-place ReLUs), on [0, 1] inputs without ImageNet normalisation, as the
    official code. Without the ImageNet VGG weights (no download at run time), the loss falls back to pixel L1
    and says so once; re-tune the reconstruction weight then (the VGG terms dominate the original magnitude).

    Args:
        perceptual: use the VGG terms when the weights are available.
        vgg_weights: torchvision weights name (``IMAGENET1K_V1``) or a local ``.pth`` state dict.
        allow_download: let torchvision download the weights when they are not cached.
    """

    TAPS = (3, 8, 13, 22, 30)

    def __init__(self, perceptual: bool = True, vgg_weights: str | None = "IMAGENET1K_V1",
                 allow_download: bool = False) -> None:
        super().__init__()
        self.vgg: nn.Module | None = None
        if perceptual:
            self.vgg = self._load_vgg(vgg_weights, allow_download)
        self.mode = "l1+vgg16" if self.vgg is not None else "l1"

    @staticmethod
    def _load_vgg(weights: str | None, allow_download: bool) -> nn.Module | None:
        from pathlib import Path

        net = torchvision.models.vgg16()
        source = None
        if weights and Path(weights).is_file():
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            source = weights
        elif weights:
            enum = torchvision.models.VGG16_Weights[weights]
            cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
            if cached.exists() or allow_download:
                net = torchvision.models.vgg16(weights=enum)
                source = str(cached)
        if source is None:
            rank_zero_warn("VGG16 ImageNet weights are not available offline: the DCoDR reconstruction loss uses "
                           "pixel L1 only (set model.reconstruction.vgg_weights to a local file, or "
                           "allow_download=true with network access)")
            return None
        features = net.features[: max(ReconstructionLoss.TAPS) + 1].eval()
        for module in features.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = False
        return features.requires_grad_(False)

    def train(self, mode: bool = True) -> ReconstructionLoss:
        super().train(mode)
        if self.vgg is not None:
            self.vgg.eval()  # a fixed feature extractor
        return self

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        assert self.vgg is not None
        taps = []
        for index, module in enumerate(self.vgg):
            x = module(x)
            if index in self.TAPS:
                taps.append(x)
        return taps

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = (fp32(reconstruction) - fp32(target)).abs().mean()
        if self.vgg is not None:
            for ours, theirs in zip(self._features(reconstruction), self._features(target)):
                loss = loss + (fp32(ours) - fp32(theirs)).abs().mean()
        return loss
