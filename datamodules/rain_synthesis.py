"""Procedural rain streaks on any clean photograph (additive model O = B + R, NLCL Sec. 3).

Streaks are made the way image editors make them: sparse random seeds, smeared along the fall direction by
a line kernel, softened across by a Gaussian of the streak width. Each length bucket gets its own line
kernel, so one call is a handful of convolutions, whatever the number of streaks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from contrastlab.errors import DataError


@dataclass
class RainSynthesizer:
    """Draw a rain layer R and return ``(O, R)`` with ``O = clamp(B + R, 0, 1)``.

    Args:
        density: fraction of pixels that seed a streak (0.002 light ... 0.02 heavy).
        angle: fall direction in degrees from vertical; positive leans to the right.
        angle_jitter: per-call uniform jitter of ``angle`` in degrees.
        length: (min, max) streak length in pixels.
        width: streak width in pixels (Gaussian FWHM across the streak).
        intensity: (min, max) peak brightness added by a streak, in [0, 1] units.
        length_buckets: number of distinct streak lengths per call.
        tint: colour of the streaks as RGB weights (white rain by default).
    """

    density: float = 0.006
    angle: float = -10.0
    angle_jitter: float = 8.0
    length: tuple[int, int] = (12, 32)
    width: float = 1.2
    intensity: tuple[float, float] = (0.25, 0.6)
    length_buckets: int = 3
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if not 0.0 < self.density < 1.0:
            raise DataError(f"rain density must be in (0, 1), got {self.density}")
        if self.length[0] < 1 or self.length[1] < self.length[0]:
            raise DataError(f"rain length must be (min, max) with 1 <= min <= max, got {self.length}")
        if self.width <= 0:
            raise DataError(f"rain width must be positive, got {self.width}")
        lo, hi = self.intensity
        if not 0.0 <= lo <= hi <= 1.0:
            raise DataError(f"rain intensity must be (min, max) within [0, 1], got {self.intensity}")

    def streak_kernel(self, length: float, angle_deg: float) -> torch.Tensor:
        """A (1, 1, K, K) kernel: a line of ``length`` pixels at ``angle_deg``, Gaussian across."""
        radius = int(math.ceil(length / 2 + 2 * self.width))
        coords = torch.arange(-radius, radius + 1, dtype=torch.float32)
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        theta = math.radians(angle_deg)
        # Unit vector along the fall direction (down and leaning right for positive angles).
        dy, dx = math.cos(theta), math.sin(theta)
        along = yy * dy + xx * dx
        across = -yy * dx + xx * dy
        sigma = self.width / 2.355
        profile = torch.exp(-0.5 * (across / sigma) ** 2)
        # Soft ends so that short streaks are not boxes.
        taper = torch.clamp((length / 2 + 0.5 - along.abs()), 0.0, 1.0)
        kernel = profile * taper
        # Peak of a streak = 1 before scaling by its intensity.
        kernel = kernel / kernel.sum(dim=1).max().clamp_min(1e-6)
        return kernel[None, None]

    def rain_layer(self, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A (3, H, W) rain layer in [0, 1]."""
        angle = self.angle + (torch.rand((), generator=generator).item() * 2 - 1) * self.angle_jitter
        lengths = torch.linspace(self.length[0], self.length[1], self.length_buckets).tolist()
        layer = torch.zeros(1, 1, height, width)
        lo, hi = self.intensity
        for length in lengths:
            seeds = (torch.rand(1, 1, height, width, generator=generator) < self.density / len(lengths)).float()
            strength = lo + (hi - lo) * torch.rand(1, 1, height, width, generator=generator)
            kernel = self.streak_kernel(length, angle)
            pad = kernel.shape[-1] // 2
            layer = layer + F.conv2d(F.pad(seeds * strength, (pad, pad, pad, pad)), kernel)
        tint = torch.tensor(self.tint, dtype=torch.float32).view(3, 1, 1)
        return (layer[0] * tint).clamp(0.0, 1.0)

    def __call__(
        self, clean: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rain on a (3, H, W) clean image in [0, 1]: returns ``(rainy, rain_layer)``."""
        if clean.dim() != 3 or clean.shape[0] != 3:
            raise DataError(f"expected a (3, H, W) image, got shape {tuple(clean.shape)}")
        rain = self.rain_layer(clean.shape[1], clean.shape[2], generator)
        rainy = (clean + rain).clamp(0.0, 1.0)
        return rainy, rainy - clean
