"""View generation for self-supervised training, as a separate, swappable stage.

``Views`` turns one image into the list of augmented views a method reads from ``batch["views"]``. By default it
runs in the loader workers (PIL + torchvision); ``datamodules.device_augment.DeviceViews`` produces the same list
on the accelerator after transfer, and the methods do not know which one ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms import v2 as T

from contrastlab.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class ViewSpec:
    """One kind of view: crop size, random-resized-crop scale range, blur probability, how many of it, and the
    augmentation ``kind``: ``moco`` (MoCo v2 aug+) or ``plain`` (crop + flip only, for linear evaluation)."""

    size: int
    scale: tuple[float, float] = (0.2, 1.0)
    blur: float = 0.5
    count: int = 1
    kind: str = "moco"


def view_transform(
    spec: ViewSpec, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> T.Compose:
    """``moco``: MoCo v2 "aug+": RandomResizedCrop -> ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8 -> Grayscale p 0.2 ->
    GaussianBlur(sigma 0.1-2) with probability ``spec.blur`` -> horizontal flip -> normalise.
    ``plain``: RandomResizedCrop -> horizontal flip -> normalise (supervised linear evaluation)."""
    if spec.kind not in ("moco", "plain"):
        raise DataError(f"view kind must be moco or plain, got {spec.kind!r}")
    steps: list = [T.RandomResizedCrop(spec.size, scale=tuple(spec.scale), antialias=True)]
    if spec.kind == "moco":
        steps += [T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2)]
    if spec.kind == "moco" and spec.blur > 0:
        kernel = max(3, int(0.1 * spec.size) // 2 * 2 + 1)  # ~10 % of the crop, odd (23 px at 224)
        steps.append(T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=spec.blur))
    steps += [T.RandomHorizontalFlip(), T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
    return T.Compose(steps)


class Views:
    """Several augmented views of one PIL image, in ``specs`` order (the first two are query and key).

    Args:
        specs: the view kinds; MoCo v2 = two 224 views; HCSC multi-crop = 2 x 224 + 192/160/128/96;
            linear evaluation = one ``plain`` view.
        mean, std: normalisation statistics.
    """

    def __init__(self, specs: Sequence[ViewSpec | dict], mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        self.specs = [s if isinstance(s, ViewSpec) else ViewSpec(**s) for s in specs]
        if not self.specs or sum(s.count for s in self.specs) < 1:
            raise DataError("`data.train_views.specs` must describe at least one view")
        self.mean, self.std = tuple(mean), tuple(std)
        self.transforms = [view_transform(s, mean, std) for s in self.specs for _ in range(s.count)]

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        return [transform(image) for transform in self.transforms]

    @property
    def sizes(self) -> list[int]:
        return [s.size for s in self.specs for _ in range(s.count)]


def two_crops(size: int = 224, blur: float = 0.5, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> Views:
    """MoCo v2: query and key, both 224 px, scale (0.2, 1)."""
    return Views([ViewSpec(size, (0.2, 1.0), blur, 2)], mean, std)


def hcsc_multi_crop(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Views:
    """HCSC multi-crop (docs/references.md, H4):
    2 x 224 (0.2-1) + 192 (0.172-0.86), 160 (0.143-0.715), 128 (0.114-0.571),
    96 (0.086-0.429), all with the MoCo v2 augmentation."""
    return Views([ViewSpec(224, (0.2, 1.0), 0.5, 2), ViewSpec(192, (0.172, 0.86)), ViewSpec(160, (0.143, 0.715)),
                  ViewSpec(128, (0.114, 0.571)), ViewSpec(96, (0.086, 0.429))], mean, std)


def eval_transform(resize: int | None = 256, crop: int = 224, mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> T.Compose:
    """Resize (shorter side) -> centre crop -> normalise; ``resize=None`` skips the resize (CIFAR)."""
    steps = [T.Resize(resize, antialias=True)] if resize else []
    steps += [T.CenterCrop(crop), T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
    return T.Compose(steps)


def base_transform(size: int) -> T.Compose:
    """For on-device augmentation: decode, resize the shorter side to ``size``, centre crop, keep uint8."""
    return T.Compose([T.Resize(size, antialias=True), T.CenterCrop(size), T.ToImage(), T.ToDtype(torch.uint8)])
