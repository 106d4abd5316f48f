"""Rain datasets: unpaired random crops for training, full images (with their ground truth) for evaluation;
every tensor in [-1, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from contrastlab.errors import DataError
from datamodules.rain.splits import ImageItem


def _to_signed(image: torch.Tensor) -> torch.Tensor:
    return image * 2.0 - 1.0


def _ensure_min_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """Upscale (bicubic) so that both sides are >= ``size``; the official code resizes such images to 256^2."""
    h, w = image.shape[1:]
    if h >= size and w >= size:
        return image
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    return F.interpolate(image[None], size=new, mode="bicubic", align_corners=False)[0].clamp(0, 1)


def _random_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    h, w = image.shape[1:]
    top = int(torch.randint(0, h - size + 1, ()).item())
    left = int(torch.randint(0, w - size + 1, ()).item())
    return image[:, top:top + size, left:left + size]


class UnpairedCropDataset(Dataset):
    """Sample i: a random crop of rainy image ``i mod |A|`` and of a *random* clean image (new pairing each step).

    Randomness comes from torch's generator, so ``seed_everything(workers=True)`` makes it repeatable.
    """

    def __init__(self, rainy: list[ImageItem], clean: list[ImageItem], crop_size: int, length: int,
                 cache: bool = True) -> None:
        if not rainy or not clean:
            raise DataError("unpaired training needs at least one rainy and one clean image")
        self.rainy, self.clean, self.crop_size, self.length, self.cache = rainy, clean, crop_size, length, cache
        self._cache: dict[tuple[str, int], torch.Tensor] = {}

    def __len__(self) -> int:
        return self.length

    def _get(self, role: str, items: list[ImageItem], index: int) -> torch.Tensor:
        key = (role, index)
        image = self._cache.get(key)
        if image is None:
            image = _ensure_min_side(items[index].load(), self.crop_size)
            if self.cache:
                self._cache[key] = image
        return image

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rainy = self._get("rainy", self.rainy, index % len(self.rainy))
        clean = self._get("clean", self.clean, int(torch.randint(0, len(self.clean), ()).item()))
        return {
            "rainy": _to_signed(_random_crop(rainy, self.crop_size)),
            "clean": _to_signed(_random_crop(clean, self.crop_size)),
        }


class FullImageDataset(Dataset):
    """Full-resolution evaluation images: rainy (+ target when known) and the file name."""

    def __init__(self, pairs: list[tuple[ImageItem, ImageItem | None]], center_crop: int | None = None) -> None:
        self.pairs, self.center_crop = pairs, center_crop

    def __len__(self) -> int:
        return len(self.pairs)

    def _crop(self, image: torch.Tensor) -> torch.Tensor:
        if self.center_crop is None:
            return image
        image = _ensure_min_side(image, self.center_crop)
        h, w = image.shape[1:]
        top, left = (h - self.center_crop) // 2, (w - self.center_crop) // 2
        return image[:, top:top + self.center_crop, left:left + self.center_crop]

    def __getitem__(self, index: int) -> dict:
        rainy_item, clean_item = self.pairs[index]
        rainy = rainy_item.load()
        sample = {"rainy": _to_signed(self._crop(rainy)), "name": rainy_item.name}
        if clean_item is not None:
            target = clean_item.load()
            if target.shape != rainy.shape:
                raise DataError(
                    f"rainy image '{rainy_item.path or rainy_item.name}' is {tuple(rainy.shape[1:])} but its clean "
                    f"target '{clean_item.path or clean_item.name}' is {tuple(target.shape[1:])}"
                )
            sample["target"] = _to_signed(self._crop(target))
        return sample
