"""Image-restoration evaluation helpers: PSNR/SSIM on RGB and Y from torchmetrics, the chroma error, tiled
full-resolution inference."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from lightning_modules.components.numerics import full_precision


def rgb_to_y(image: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma as MATLAB ``rgb2ycbcr`` computes it, scaled to [0, 1]: (B, 3, H, W) -> (B, 1, H, W)."""
    weights = image.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return ((image * weights).sum(1, keepdim=True) + 16.0) / 255.0


def rgb_to_cbcr(image: torch.Tensor) -> torch.Tensor:
    """The chroma channels as MATLAB ``rgb2ycbcr`` computes them (BT.601), in [0, 1]: (B, 3, H, W) -> (B, 2, H, W)."""
    weights = image.new_tensor([[-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]).view(2, 3, 1, 1)
    return (torch.nn.functional.conv2d(image, weights) + 128.0) / 255.0


def colour_shift(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per image, the distance between the mean colours of ``image`` and ``target`` in 8-bit levels (the L2 norm of
    the difference of the per-channel means): a global tint or saturation change, which PSNR-Y does not see."""
    return (image.mean(dim=(2, 3)) - target.mean(dim=(2, 3))).norm(dim=1) * 255.0


def quantize(image: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] values to the 8-bit grid, as the saved PNG holds them."""
    return image.clamp(0, 1).mul(255.0).round().div(255.0)


class RestorationMetrics(nn.Module):
    """PSNR and SSIM of the restored image *and* of the degraded input, on RGB and on the Y channel, and their
    colour error: PSNR of the chroma channels (``psnr_cbcr``) and the mean-colour shift against the target
    (``colour_shift``, 8-bit levels, lower is better).

    Per-image scores averaged over images (``dim=(1, 2, 3)``; the default torchmetrics PSNR would pool the
    squared error of the whole set instead). Names: ``psnr``, ``ssim``, ``psnr_y``, ``ssim_y``, ``psnr_cbcr``,
    ``colour_shift``, and each with ``_rainy`` for the input.
    """

    def __init__(self) -> None:
        super().__init__()

        def pair() -> MetricCollection:
            return MetricCollection({
                "psnr": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
                "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
            })

        self.output_rgb, self.output_y, self.input_rgb, self.input_y = pair(), pair(), pair(), pair()
        self.output_cbcr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        self.input_cbcr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        self.output_shift, self.input_shift = MeanMetric(), MeanMetric()

    def update(self, restored: torch.Tensor, degraded: torch.Tensor, target: torch.Tensor) -> None:
        """All in [0, 1], (B, 3, H, W); values are quantised to 8 bits first. Autocast is off here: under
        bf16-mixed, SSIM's Gaussian filtering would otherwise run in bf16 and halve the score."""
        with full_precision(restored.device):
            restored, degraded, target = (quantize(restored.float()), quantize(degraded.float()),
                                          quantize(target.float()))
            self.output_rgb.update(restored, target)
            self.input_rgb.update(degraded, target)
            self.output_y.update(rgb_to_y(restored), rgb_to_y(target))
            self.input_y.update(rgb_to_y(degraded), rgb_to_y(target))
            self.output_cbcr.update(rgb_to_cbcr(restored), rgb_to_cbcr(target))
            self.input_cbcr.update(rgb_to_cbcr(degraded), rgb_to_cbcr(target))
            self.output_shift.update(colour_shift(restored, target))
            self.input_shift.update(colour_shift(degraded, target))

    def compute(self) -> dict[str, torch.Tensor]:
        with full_precision(self.output_rgb["psnr"].device):
            return self._compute()

    def _compute(self) -> dict[str, torch.Tensor]:
        out = {}
        for suffix, collection in (("", self.output_rgb), ("_y", self.output_y)):
            for name, value in collection.compute().items():
                out[f"{name}{suffix}"] = value
        for suffix, collection in (("_rainy", self.input_rgb), ("_y_rainy", self.input_y)):
            for name, value in collection.compute().items():
                out[f"{name}{suffix}"] = value
        out |= {"psnr_cbcr": self.output_cbcr.compute(), "psnr_cbcr_rainy": self.input_cbcr.compute(),
                "colour_shift": self.output_shift.compute(), "colour_shift_rainy": self.input_shift.compute()}
        return out

    def reset(self) -> None:
        for metric in (self.output_rgb, self.output_y, self.input_rgb, self.input_y, self.output_cbcr,
                       self.input_cbcr, self.output_shift, self.input_shift):
            metric.reset()


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: int,
    overlap: int = 32,
) -> torch.Tensor:
    """Apply a fully convolutional ``fn`` tile by tile with linear blending of the overlaps.

    Memory stays bounded for any image size. Networks with instance normalisation see per-tile statistics, so
    the result differs slightly from a whole-image pass; use it only when the whole image does not fit.
    """
    _, _, height, width = image.shape
    if height <= tile and width <= tile:
        return fn(image)
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f"tile ({tile}) must be larger than overlap ({overlap})")
    tops = list(range(0, max(height - tile, 0) + 1, stride))
    lefts = list(range(0, max(width - tile, 0) + 1, stride))
    if tops[-1] + tile < height:
        tops.append(height - tile)
    if lefts[-1] + tile < width:
        lefts.append(width - tile)
    output = None
    weight = torch.zeros(1, 1, height, width, device=image.device)
    for top in tops:
        for left in lefts:
            patch = image[:, :, top:top + tile, left:left + tile]
            result = fn(patch).float()
            h, w = patch.shape[-2:]
            ramp_h = _ramp(h, overlap if top > 0 else 0, overlap if top + h < height else 0, image.device)
            ramp_w = _ramp(w, overlap if left > 0 else 0, overlap if left + w < width else 0, image.device)
            mask = ramp_h[:, None] * ramp_w[None, :]
            if output is None:
                output = torch.zeros(image.shape[0], result.shape[1], height, width, device=image.device)
            output[:, :, top:top + h, left:left + w] += result * mask
            weight[:, :, top:top + h, left:left + w] += mask
    assert output is not None
    return output / weight.clamp_min(1e-8)


def _ramp(length: int, lead: int, trail: int, device: torch.device) -> torch.Tensor:
    ramp = torch.ones(length, device=device)
    if lead:
        ramp[:lead] = torch.linspace(1.0 / (lead + 1), 1.0, lead, device=device)
    if trail:
        ramp[length - trail:] = torch.linspace(1.0, 1.0 / (trail + 1), trail, device=device)
    return ramp
