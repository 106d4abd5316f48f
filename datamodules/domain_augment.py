"""DCoDR's positive views: one random augmentation per image from a configurable set (docs/references.md, D3).

The default set changes only low-level statistics (blur, contrast, a mild crop, saturation), which the paper
argues keeps the content attributes intact; the other registered operations are there for augmentation studies
(flips, rotations and hue change evaluated content attributes and are expected to hurt informativeness).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision.transforms import v2 as T

from contrastlab.errors import DataError

DEFAULT_SET = ("gblurr", "high_contrast", "crop", "high_satur")


def _operation(name: str, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The named operation on a (3, H, W) float image in [0, 1]."""
    table: dict[str, Callable[[], Callable]] = {
        "gblurr": lambda: T.GaussianBlur(5, sigma=1.0),
        "high_contrast": lambda: T.ColorJitter(contrast=(1.8, 3.0)),
        "crop": lambda: T.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
        "high_satur": lambda: T.ColorJitter(saturation=(1.8, 3.0)),
        "h_flip": lambda: T.RandomHorizontalFlip(p=1.0),
        "v_flip": lambda: T.RandomVerticalFlip(p=1.0),
        "affine": lambda: T.RandomAffine(degrees=40, fill=1.0),
        # The official op erased the wrong axes of an HWC tensor; here it acts on CHW as intended.
        "random_erasing": lambda: T.RandomErasing(p=1.0),
        "hue_rot": lambda: T.RandomChoice([T.ColorJitter(hue=(0.2, 0.5)), T.ColorJitter(hue=(-0.5, -0.2))]),
        "low_bright": lambda: T.ColorJitter(brightness=(0.2, 0.6)),
        "high_bright": lambda: T.ColorJitter(brightness=(1.4, 1.8)),
        "low_contrast": lambda: T.ColorJitter(contrast=(0.3, 0.8)),
        "grayscale": lambda: T.Grayscale(num_output_channels=3),
        "simsiam": lambda: T.Compose([
            T.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True), T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.3), T.RandomGrayscale(p=0.2),
            T.RandomApply([T.GaussianBlur(3, sigma=(1.0, 2.0))], p=0.2)]),
    }
    if name not in table:
        raise DataError(f"unknown augmentation {name!r}; choose from {sorted(table)} (config key "
                         f"`data.augment.names`)")
    return table[name]()


class PositiveAugment:
    """Apply one operation drawn uniformly from ``names`` to a (3, H, W) image in [0, 1].

    Args:
        names: the operation set (default: DCoDR's blur, high contrast, crop, high saturation).
    """

    def __init__(self, names: Sequence[str] = DEFAULT_SET) -> None:
        if not names:
            raise DataError("`data.augment.names` must list at least one augmentation")
        self.names = list(names)
        for name in self.names:
            _operation(name, 8)  # validate early, before any worker starts
        self._cache: dict[tuple[str, int], Callable] = {}

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        name = self.names[int(torch.randint(len(self.names), ()).item())]
        key = (name, image.shape[-1])
        if key not in self._cache:
            self._cache[key] = _operation(name, image.shape[-1])
        return self._cache[key](image).clamp(0.0, 1.0)
