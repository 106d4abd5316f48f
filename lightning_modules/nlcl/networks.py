"""NLCL networks: layer generators G_B / G_R, the antialiased PatchGAN D, projection heads (NLCL Sec. 3.1).

The generator keeps the official module layout (``gen.0`` head conv, ``gen.1..16`` residual blocks with
``model.{0,1}.conv``, ``gen.17.conv.{0,3}`` tail, ``gen.18`` output conv), so the released checkpoints
(``latest_net_Back.pth`` / ``latest_net_Rain.pth``) load with ``strict=True`` and no key mapping.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock(nn.Module):
    """3x3 conv (zero padding) -> non-affine InstanceNorm -> optional ReLU (MUNIT ``Conv2dBlock``)."""

    def __init__(self, channels: int, activation: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
        self.activation = nn.ReLU() if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(x)))


class ResidualBlock(nn.Module):
    """x + IN(conv(ReLU(IN(conv(x))))): the second ``ResBlock`` of the official ``networks.py``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(ConvBlock(channels, activation=True), ConvBlock(channels, activation=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.model(x)


class TailBlock(nn.Module):
    """conv -> IN -> ReLU -> conv, no residual (official ``conv_ycf``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.InstanceNorm2d(channels, affine=False, track_running_stats=False),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class LayerGenerator(nn.Module):
    """Full-resolution residual CNN that maps a rainy image O to one layer (B or R), NLCL Sec. 3.1.

    No down-sampling, linear output (no tanh), inputs in [-1, 1]; any H x W works.

    Args:
        width: feature channels (official 32).
        num_blocks: residual blocks (official 16).
        residual_output: return ``x + gen(x)``; with ``zero_init_output`` the untrained network is the identity.
            A demo choice for short CPU runs, not the official design (which learns the full mapping).
        zero_init_output: zero the output conv so the initial output is 0 (or x with ``residual_output``).
        achromatic_residual: with ``residual_output``, add the residual's channel mean to every channel, so the
            output keeps the input's chroma exactly (rain streaks are grey-white); not in the paper.
    """

    def __init__(
        self,
        channels: int = 3,
        width: int = 32,
        num_blocks: int = 16,
        residual_output: bool = False,
        zero_init_output: bool = False,
        achromatic_residual: bool = False,
    ) -> None:
        super().__init__()
        if achromatic_residual and not residual_output:
            raise ValueError("achromatic_residual needs residual_output: true")
        self.width, self.residual_output, self.achromatic_residual = width, residual_output, achromatic_residual
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1)]
        layers += [ResidualBlock(width) for _ in range(num_blocks)]
        layers += [TailBlock(width), nn.Conv2d(width, channels, 3, padding=1)]
        self.gen = nn.Sequential(*layers)
        if zero_init_output:
            nn.init.zeros_(self.gen[-1].weight)
            nn.init.zeros_(self.gen[-1].bias)

    @property
    def num_trunk_layers(self) -> int:
        """Indices usable as feature taps: the head conv, the residual blocks and the tail."""
        return len(self.gen) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.gen(x)
        if self.achromatic_residual:
            out = out.mean(dim=1, keepdim=True)  # broadcast: one change for R, G and B alike
        return x + out if self.residual_output else out

    def encode(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Outputs of ``gen[i]`` for i in ``layers`` (ascending), stopping after the last one (CUT encoder use)."""
        feats, last = [], max(layers)
        wanted = set(layers)
        for index, module in enumerate(self.gen):
            x = module(x)
            if index in wanted:
                feats.append(x)
            if index == last:
                break
        return feats

    def tap_channels(self, layers: Sequence[int]) -> list[int]:
        for layer in layers:
            if not 0 <= layer < self.num_trunk_layers:
                raise ValueError(f"generator feature layer {layer} outside 0..{self.num_trunk_layers - 1}")
        return [self.width] * len(layers)


class BlurDownsample(nn.Module):
    """Antialiased stride-2 down-sampling: reflect pad, 3x3 binomial blur [1, 2, 1]^2 / 16, depthwise."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = taps[:, None] * taps[None, :]
        self.register_buffer("filt", (kernel / kernel.sum())[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.filt.to(x.dtype), stride=2, groups=x.shape[1])


class PatchDiscriminator(nn.Module):
    """CUT's antialiased 70x70 PatchGAN (``define_D(netD='basic')``), NLCL Sec. 3.1 and Fig. 2(b).

    Module indices follow the official ``model`` Sequential (0 conv, 1 LReLU, 2 blur-down, 3 conv, 4 IN, ...),
    so feature taps are named by the same numbers as the official ``adv_nce_layers``.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        norm = lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=False)  # noqa: E731
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, 1, 1), nn.LeakyReLU(0.2),
                                   BlurDownsample(base_channels)]
        mult = 1
        for n in range(1, num_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(base_channels * prev, base_channels * mult, 4, 1, 1), norm(base_channels * mult),
                       nn.LeakyReLU(0.2), BlurDownsample(base_channels * mult)]
        prev, mult = mult, min(2**num_layers, 8)
        layers += [nn.Conv2d(base_channels * prev, base_channels * mult, 4, 1, 1), norm(base_channels * mult),
                   nn.LeakyReLU(0.2), nn.Conv2d(base_channels * mult, 1, 4, 1, 1)]
        self.model = nn.Sequential(*layers)
        init_xavier(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def tap_channels(self, taps: Sequence[int]) -> list[int]:
        """Channels of ``[image] + taps`` features."""
        channels = [self.model[0].in_channels]
        for tap in taps:
            module = self.model[tap]
            if not isinstance(module, nn.Conv2d):
                raise ValueError(f"discriminator tap {tap} is {type(module).__name__}, expected a Conv2d index")
            channels.append(module.out_channels)
        return channels

    def forward_with_taps(
        self, x: torch.Tensor, taps: Sequence[int], need_logits: bool = True
    ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """Patch logits (or None) and ``[x] + [features at taps]``.

        A conv followed directly by a LeakyReLU is tapped *after* the activation: the official in-place
        LeakyReLU overwrites the stored conv output (docs/references.md, N1), and so
        conv0's features are post-activation.
        """
        feats, wanted = [x], set(taps)
        last = len(self.model) - 1 if need_logits else max(taps) + 1
        pending = None
        for index, module in enumerate(self.model):
            x = module(x)
            if pending is not None:
                feats.append(x if isinstance(module, nn.LeakyReLU) else pending)
                pending = None
            if index in wanted:
                pending = x
            if index == last:
                break
        if pending is not None:
            feats.append(pending)
        return (x if need_logits else None), feats


class ProjectionHeads(nn.Module):
    """One MLP per feature level: Linear(C, d) -> ReLU -> Linear(d, d), then v / (||v|| + 1e-7) (CUT/NLCL heads).

    Created eagerly from known channel counts (the official code creates them lazily at the first forward,
    which DDP and checkpoint loading cannot follow).
    """

    def __init__(self, in_channels: Sequence[int], dim: int = 256) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, dim), nn.ReLU(), nn.Linear(dim, dim)) for c in in_channels
        )
        init_xavier(self)

    def forward(self, level: int, x: torch.Tensor) -> torch.Tensor:
        v = self.mlps[level](x).float()
        return v / (v.norm(dim=-1, keepdim=True) + 1e-7)


def init_xavier(module: nn.Module, gain: float = 0.02) -> None:
    """Official ``init_net(init_type='xavier', init_gain=0.02)`` for D and the heads: weights xavier, biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
