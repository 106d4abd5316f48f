"""MoCo v2 views made on the accelerator, batched: the swappable alternative to loader-side augmentation.

The loader workers only decode and resize (shorter side to ``base_size``, centre crop, uint8); after the batch is
on the device, ``DeviceViews`` draws every random parameter for the whole batch at once and applies
random-resized crops (``roi_align``), colour jitter, grayscale, Gaussian blur (one grouped convolution with a
kernel per image), flips and normalisation. The methods read ``batch["views"]`` either way.

Differences from the PIL pipeline, by design: crops come from the resized ``base_size`` square rather than the
full-resolution image; the four colour-jitter operations run in a fixed order (brightness, contrast, saturation,
hue) rather than a random one; hue is rotated in YIQ space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from datamodules.augmentations import IMAGENET_MEAN, IMAGENET_STD, ViewSpec, base_transform

_LUMA = (0.299, 0.587, 0.114)


def _crop_boxes(batch: int, size: int, scale: Sequence[float], ratio: tuple[float, float],
                device: torch.device) -> torch.Tensor:
    """RandomResizedCrop boxes for a batch of ``size`` x ``size`` images: (B, 5) rows [index, x1, y1, x2, y2].

    Area and log-aspect are drawn uniformly as torchvision does; boxes that do not fit are shrunk to fit.
    """
    area = size * size * torch.empty(batch, device=device).uniform_(scale[0], scale[1])
    log_ratio = torch.empty(batch, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    aspect = log_ratio.exp()
    w = (area * aspect).sqrt().clamp(1, size)
    h = (area / aspect).sqrt().clamp(1, size)
    x1 = torch.rand(batch, device=device) * (size - w)
    y1 = torch.rand(batch, device=device) * (size - h)
    index = torch.arange(batch, device=device, dtype=torch.float32)
    return torch.stack((index, x1, y1, x1 + w, y1 + h), dim=1)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    weights = x.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True).expand_as(x)


def _rotate_hue(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate chroma by ``angle`` (radians, per image) in YIQ space."""
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    to_rgb = torch.linalg.inv(to_yiq)
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
    cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack((yiq[:, 0], cos * i - sin * q, sin * i + cos * q), dim=1)
    return torch.einsum("ij,bjhw->bihw", to_rgb, yiq)


def _blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-image Gaussian blur: separable kernels, one grouped convolution per axis for the whole batch."""
    batch, channels, height, width = x.shape
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets[None, :] / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(channels, dim=0)  # (B*C, K)
    flat = F.pad(x.reshape(1, batch * channels, height, width), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=batch * channels)
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=batch * channels)
    return flat.view(batch, channels, height, width)


class DeviceViews(nn.Module):
    """Batched MoCo v2 views on the accelerator.

    Args:
        specs: the views, as for ``datamodules.augmentations.Views`` (``moco`` kind only).
        base_size: side of the uint8 square the workers deliver.
        mean, std: normalisation.
    """

    def __init__(self, specs: Sequence[ViewSpec | dict], base_size: int = 256, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.specs = [s if isinstance(s, ViewSpec) else ViewSpec(**s) for s in specs]
        self.base_size = base_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def base_transform(self):  # noqa: ANN201 - a torchvision transform
        return base_transform(self.base_size)

    @torch.no_grad()
    def view(self, images: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
        """One augmented view of every image of a float batch in [0, 1] (B, 3, S, S)."""
        batch, device = images.shape[0], images.device
        boxes = _crop_boxes(batch, images.shape[-1], spec.scale, (3 / 4, 4 / 3), device)
        x = roi_align(images, boxes, output_size=spec.size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
        if spec.kind == "moco":
            jitter = torch.rand(batch, device=device) < 0.8
            factors = torch.empty(batch, 3, device=device).uniform_(0.6, 1.4)  # brightness, contrast, saturation
            hue = torch.empty(batch, device=device).uniform_(-0.1, 0.1) * 2 * math.pi
            one = torch.ones_like(factors)
            factors = torch.where(jitter[:, None], factors, one)
            hue = torch.where(jitter, hue, torch.zeros_like(hue))
            x = (x * factors[:, 0].view(-1, 1, 1, 1)).clamp(0, 1)
            mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
            x = (mean + (x - mean) * factors[:, 1].view(-1, 1, 1, 1)).clamp(0, 1)
            gray = _grayscale(x)
            x = (gray + (x - gray) * factors[:, 2].view(-1, 1, 1, 1)).clamp(0, 1)
            x = _rotate_hue(x, hue).clamp(0, 1)
            to_gray = (torch.rand(batch, device=device) < 0.2).view(-1, 1, 1, 1)
            x = torch.where(to_gray, _grayscale(x), x)
            if spec.blur > 0:
                sigma = torch.empty(batch, device=device).uniform_(0.1, 2.0)
                blurred = _blur(x, sigma, max(3, int(0.1 * spec.size) // 2 * 2 + 1))
                apply = (torch.rand(batch, device=device) < spec.blur).view(-1, 1, 1, 1)
                x = torch.where(apply, blurred, x)
        flip = (torch.rand(batch, device=device) < 0.5).view(-1, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)
        return (x - self.mean.to(x)) / self.std.to(x)

    def forward(self, raw: torch.Tensor) -> list[torch.Tensor]:
        images = raw.float().div(255.0) if raw.dtype == torch.uint8 else raw.float()
        return [self.view(images, spec) for spec in self.specs for _ in range(spec.count)]
