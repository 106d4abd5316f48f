"""Procedural rain on photographs that ship inside scikit-image (the embedded demo's data: no download)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from contrastlab.errors import DataError, MissingPathError
from datamodules.images import load_rgb, pil_to_tensor
from datamodules.rain.splits import ImageItem, RainSource, RainSplits
from datamodules.rain_synthesis import RainSynthesizer


def skimage_photo(name: str) -> torch.Tensor:
    """A photograph shipped inside scikit-image (no download), as (3, H, W) in [0, 1]."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    matches = sorted(folder.glob(f"{name}.*"))
    if not matches:
        available = sorted({p.stem for p in folder.glob("*.png")} | {p.stem for p in folder.glob("*.jpg")})
        raise MissingPathError(f"scikit-image ships no image '{name}'; available: {', '.join(available)}")
    return pil_to_tensor(load_rgb(matches[0]))


class SyntheticRainSplits(RainSource):
    """Procedural rain on clean photographs: the embedded default needs no download.

    Scenes are used in one role, never two: ``rainy_scenes`` (rain added, training), ``clean_scenes`` (training as
    they are), ``test_scenes`` (rain added, held out with their clean version as ground truth) and ``val_scenes``
    (the same, for the monitors).
    ``halved_scenes`` contribute one half (left or right, alternating) to the rainy set and the *other* half to
    the clean set: the two training sets then share their colour statistics, so the discriminator cannot tell
    them apart by palette, while no pixel of the rainy set appears clean (unpaired as before).
    Each rainy image gets ``variants`` independent rain draws; every draw is fixed by ``seed``.

    Args:
        rainy_scenes / clean_scenes / halved_scenes / test_scenes: scikit-image sample names (``astronaut``) or
            image file paths.
        synthesizer: the rain model (``RainSynthesizer``).
        max_side: downscale photographs so that their longer side is at most this (keeps CPU runs short).
    """

    def __init__(
        self,
        test_scenes: Sequence[str],
        rainy_scenes: Sequence[str] = (),
        clean_scenes: Sequence[str] = (),
        halved_scenes: Sequence[str] = (),
        synthesizer: RainSynthesizer | None = None,
        variants: int = 2,
        max_side: int | None = 384,
        val_scenes: Sequence[str] = (),
    ) -> None:
        roles = [set(rainy_scenes), set(clean_scenes), set(halved_scenes), set(test_scenes), set(val_scenes)]
        shared = {s for i, a in enumerate(roles) for b in roles[i + 1:] for s in a & b}
        if shared:
            raise DataError(f"scenes must be disjoint between rainy, clean, halved, test and validation sets; "
                             f"shared: {sorted(shared)}")
        if not (rainy_scenes or halved_scenes) or not (clean_scenes or halved_scenes):
            raise DataError("synthetic rain needs rainy and clean training scenes (or halved_scenes)")
        self.rainy_scenes, self.clean_scenes = list(rainy_scenes), list(clean_scenes)
        self.halved_scenes, self.test_scenes = list(halved_scenes), list(test_scenes)
        self.val_scenes = list(val_scenes)
        self.synthesizer = synthesizer or RainSynthesizer()
        self.variants, self.max_side = variants, max_side

    def _load(self, scene: str) -> torch.Tensor:
        path = Path(scene)
        image = pil_to_tensor(load_rgb(path)) if path.suffix else skimage_photo(scene)
        if self.max_side and max(image.shape[1:]) > self.max_side:
            scale = self.max_side / max(image.shape[1:])
            size = (round(image.shape[1] * scale), round(image.shape[2] * scale))
            image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
            image = image.clamp(0, 1)
        return image

    def load(self, seed: int = 0) -> RainSplits:
        generator = torch.Generator().manual_seed(seed)
        rainy_sources = [(Path(s).stem, self._load(s)) for s in self.rainy_scenes]
        clean_sources = [(Path(s).stem, self._load(s)) for s in self.clean_scenes]
        for index, scene in enumerate(self.halved_scenes):
            image = self._load(scene)
            mid = image.shape[2] // 2
            stem = Path(scene).stem
            left, right = (f"{stem}_left", image[:, :, :mid]), (f"{stem}_right", image[:, :, mid:])
            rainy_half, clean_half = (left, right) if index % 2 == 0 else (right, left)
            rainy_sources.append(rainy_half)
            clean_sources.append(clean_half)
        rainy = [ImageItem(f"{name}_rain{v}.png", tensor=self.synthesizer(image, generator)[0])
                 for name, image in rainy_sources for v in range(self.variants)]
        clean = [ImageItem(f"{name}.png", tensor=image) for name, image in clean_sources]
        held_out = {}
        for role, scenes in (("test", self.test_scenes), ("val", self.val_scenes)):
            held_out[role] = []
            for scene in scenes:
                image = self._load(scene)
                name = f"{Path(scene).stem}.png"
                rainy_image = self.synthesizer(image, generator)[0]
                held_out[role].append((ImageItem(name, tensor=rainy_image), ImageItem(name, tensor=image)))
        return RainSplits(rainy, clean, held_out["test"], held_out["val"])
