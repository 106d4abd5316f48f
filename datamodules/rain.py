"""Rainy/clean data for unsupervised deraining (NLCL).

Value range: every tensor this module yields is in **[-1, 1]** (the official NLCL normalisation).

Batch contract:
    training    ``{"rainy": B x 3 x c x c, "clean": B x 3 x c x c}``; ``clean`` is a *different* scene, drawn
                afresh at every step (unpaired, CycleGAN-style).
    evaluation  ``{"rainy": 1 x 3 x H x W, "name": [str]}`` plus ``"target"`` (the true clean image of the same
                scene) when ground truth exists; full resolution, batch 1.

Where the images come from is a *split* object (instantiated by Hydra): ``FolderSplits`` (rainy folder + clean
folder, the CycleGAN ``trainA/trainB`` layout, paired or rainy-only test folders), ``PairedFolderSplit`` (a fair,
seeded split of one paired folder into disjoint rainy-only, clean-only and held-out test subsets) and
``SyntheticRainSplits`` (procedural rain on photographs that ship with scikit-image: no download).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from contrastlab.errors import DataError, MissingPathError
from datamodules.base import BaseDataModule
from datamodules.images import list_images, load_rgb, match_pairs, pil_to_tensor
from datamodules.rain_synthesis import RainSynthesizer
from datamodules.verify import check_images


@dataclass
class ImageItem:
    """One image: a file on disk, or a tensor made in memory (3 x H x W in [0, 1])."""

    name: str
    path: Path | None = None
    tensor: torch.Tensor | None = None

    def load(self) -> torch.Tensor:
        if self.tensor is not None:
            return self.tensor
        assert self.path is not None
        return pil_to_tensor(load_rgb(self.path))


@dataclass
class RainSplits:
    """Lists of images for each role; ``test`` holds (rainy, clean-or-None) pairs."""

    train_rainy: list[ImageItem]
    train_clean: list[ImageItem]
    test: list[tuple[ImageItem, ImageItem | None]] = field(default_factory=list)

    def files(self) -> list[Path]:
        items = list(self.train_rainy) + list(self.train_clean)
        for rainy, clean in self.test:
            items.append(rainy)
            if clean is not None:
                items.append(clean)
        return [item.path for item in items if item.path is not None]


def _parse_ids(spec: str | Sequence[int | str] | None) -> set[str] | None:
    """``"1-30"`` / ``"1-30,41"`` / ``[1, 2]`` -> the set of file stems it names (None: all)."""
    if spec is None:
        return None
    parts = spec.split(",") if isinstance(spec, str) else [str(s) for s in spec]
    stems: set[str] = set()
    for part in parts:
        part = part.strip()
        if "-" in part and all(p.strip().isdigit() for p in part.split("-", 1)):
            lo, hi = (int(p) for p in part.split("-", 1))
            stems.update(str(i) for i in range(lo, hi + 1))
        elif part:
            stems.add(part)
    return stems


def _select(paths: list[Path], ids: str | Sequence | None, *, key: str) -> list[Path]:
    wanted = _parse_ids(ids)
    if wanted is None:
        return paths
    chosen = [p for p in paths if p.stem in wanted]
    if not chosen:
        raise DataError(f"`{key}`={ids!r} selects none of the {len(paths)} files in '{paths[0].parent}'")
    return chosen


def _items(paths: Sequence[Path]) -> list[ImageItem]:
    return [ImageItem(name=p.name, path=p) for p in paths]


class FolderSplits:
    """Unpaired training folders plus optional test folders.

    Args:
        rainy_dir: rainy training images (domain A). With ``cyclegan_root`` set, defaults to ``trainA``.
        clean_dir: clean training images of other scenes (domain B); ``trainB`` under ``cyclegan_root``.
        test_dir: a paired folder (``input/`` rainy, ``target/`` clean, same file names) for PSNR/SSIM.
        test_rainy_dir: rainy test images without ground truth (real rain); ``testA`` under ``cyclegan_root``.
        cyclegan_root: a CycleGAN-layout folder (``trainA``, ``trainB``, optional ``testA``).
        *_ids: keep only files whose stem is in this range, e.g. ``"1-80"`` (numbered benchmarks).
    """

    def __init__(
        self,
        rainy_dir: str | None = None,
        clean_dir: str | None = None,
        test_dir: str | None = None,
        test_rainy_dir: str | None = None,
        cyclegan_root: str | None = None,
        rainy_ids: str | None = None,
        clean_ids: str | None = None,
        test_ids: str | None = None,
        test_rainy_ids: str | None = None,
        input_subdir: str = "input",
        target_subdir: str = "target",
    ) -> None:
        if cyclegan_root is not None:
            root = Path(cyclegan_root)
            rainy_dir = rainy_dir or str(root / "trainA")
            clean_dir = clean_dir or str(root / "trainB")
            if test_rainy_dir is None and (root / "testA").is_dir():
                test_rainy_dir = str(root / "testA")
        self.rainy_dir, self.clean_dir = rainy_dir, clean_dir
        self.test_dir, self.test_rainy_dir = test_dir, test_rainy_dir
        self.ids = {"rainy": rainy_ids, "clean": clean_ids, "test": test_ids, "test_rainy": test_rainy_ids}
        self.input_subdir, self.target_subdir = input_subdir, target_subdir

    def build(self, seed: int) -> RainSplits:
        if self.rainy_dir is None or self.clean_dir is None:
            raise DataError("`data.splits.rainy_dir` and `data.splits.clean_dir` (or `cyclegan_root`) are required")
        rainy = _select(list_images(self.rainy_dir, key="data.splits.rainy_dir"), self.ids["rainy"],
                        key="data.splits.rainy_ids")
        clean = _select(list_images(self.clean_dir, key="data.splits.clean_dir"), self.ids["clean"],
                        key="data.splits.clean_ids")
        test: list[tuple[ImageItem, ImageItem | None]] = []
        if self.test_dir is not None:
            wanted = _parse_ids(self.ids["test"])
            pairs = _paired_files(Path(self.test_dir), self.input_subdir, self.target_subdir, "data.splits.test_dir")
            for r, c in pairs:
                if wanted is None or r.stem in wanted:
                    test.append((ImageItem(r.name, r), ImageItem(c.name, c)))
        if self.test_rainy_dir is not None:
            files = _select(list_images(self.test_rainy_dir, key="data.splits.test_rainy_dir"),
                            self.ids["test_rainy"], key="data.splits.test_rainy_ids")
            test.extend((item, None) for item in _items(files))
        return RainSplits(_items(rainy), _items(clean), test)


def _paired_files(root: Path, input_subdir: str, target_subdir: str, key: str) -> list[tuple[Path, Path]]:
    input_dir, target_dir = root / input_subdir, root / target_subdir
    if not root.exists():
        raise MissingPathError(f"paired folder '{root}' does not exist (config key `{key}`)")
    inputs = list_images(input_dir, key=key)
    targets = list_images(target_dir, key=key)
    return match_pairs(inputs, targets, input_dir=input_dir, target_dir=target_dir)


class PairedFolderSplit:
    """A fair unsupervised protocol on one paired folder (Rain100L layout ``input/N``, ``target/N``).

    The pairs are shuffled by ``seed`` and cut into three disjoint scene sets: ``n_test`` held-out pairs
    (PSNR/SSIM), ``n_rainy`` scenes whose *rainy* image is used for training and ``n_clean`` other scenes whose
    *clean* image is used for training. No test scene's clean image is ever seen in training.
    """

    def __init__(
        self,
        root: str,
        n_rainy: int | None = None,
        n_clean: int | None = None,
        n_test: int = 20,
        input_subdir: str = "input",
        target_subdir: str = "target",
    ) -> None:
        self.root, self.n_rainy, self.n_clean, self.n_test = root, n_rainy, n_clean, n_test
        self.input_subdir, self.target_subdir = input_subdir, target_subdir

    def build(self, seed: int) -> RainSplits:
        pairs = _paired_files(Path(self.root), self.input_subdir, self.target_subdir, "data.splits.root")
        order = list(range(len(pairs)))
        random.Random(seed).shuffle(order)
        n_test = self.n_test
        rest = len(pairs) - n_test
        n_rainy = self.n_rainy if self.n_rainy is not None else rest // 2
        n_clean = self.n_clean if self.n_clean is not None else rest - n_rainy
        if n_test < 1 or n_rainy < 1 or n_clean < 1 or n_test + n_rainy + n_clean > len(pairs):
            raise DataError(
                f"cannot split {len(pairs)} pairs of '{self.root}' into n_test={n_test}, n_rainy={n_rainy}, "
                f"n_clean={n_clean} disjoint scenes (config keys `data.splits.n_*`)"
            )
        test_ids = sorted(order[:n_test])
        rainy_ids = sorted(order[n_test:n_test + n_rainy])
        clean_ids = sorted(order[n_test + n_rainy:n_test + n_rainy + n_clean])
        return RainSplits(
            train_rainy=_items([pairs[i][0] for i in rainy_ids]),
            train_clean=_items([pairs[i][1] for i in clean_ids]),
            test=[(ImageItem(pairs[i][0].name, pairs[i][0]), ImageItem(pairs[i][1].name, pairs[i][1]))
                  for i in test_ids],
        )


def skimage_photo(name: str) -> torch.Tensor:
    """A photograph shipped inside scikit-image (no download), as (3, H, W) in [0, 1]."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    matches = sorted(folder.glob(f"{name}.*"))
    if not matches:
        available = sorted({p.stem for p in folder.glob("*.png")} | {p.stem for p in folder.glob("*.jpg")})
        raise MissingPathError(f"scikit-image ships no image '{name}'; available: {', '.join(available)}")
    return pil_to_tensor(load_rgb(matches[0]))


class SyntheticRainSplits:
    """Procedural rain on clean photographs: the embedded default needs no download.

    Scenes are used in one of three roles, never two: ``rainy_scenes`` (rain added, training), ``clean_scenes``
    (training as they are) and ``test_scenes`` (rain added, held out with their clean version as ground truth).
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
    ) -> None:
        roles = [set(rainy_scenes), set(clean_scenes), set(halved_scenes), set(test_scenes)]
        shared = {s for i, a in enumerate(roles) for b in roles[i + 1:] for s in a & b}
        if shared:
            raise DataError(f"scenes must be disjoint between rainy, clean, halved and test sets; "
                             f"shared: {sorted(shared)}")
        if not (rainy_scenes or halved_scenes) or not (clean_scenes or halved_scenes):
            raise DataError("synthetic rain needs rainy and clean training scenes (or halved_scenes)")
        self.rainy_scenes, self.clean_scenes = list(rainy_scenes), list(clean_scenes)
        self.halved_scenes, self.test_scenes = list(halved_scenes), list(test_scenes)
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

    def build(self, seed: int) -> RainSplits:
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
        test = []
        for scene in self.test_scenes:
            image = self._load(scene)
            name = f"{Path(scene).stem}.png"
            test.append((ImageItem(name, tensor=self.synthesizer(image, generator)[0]), ImageItem(name, tensor=image)))
        return RainSplits(rainy, clean, test)


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


class RainDataModule(BaseDataModule):
    """Unpaired rainy/clean training crops, full-resolution evaluation, prediction on a folder.

    Args:
        splits: where the images come from (``FolderSplits``, ``PairedFolderSplit``, ``SyntheticRainSplits``).
        crop_size: training crop side (the paper: 256).
        batch_size: training images per device.
        samples_per_epoch: training samples per epoch; default max(|rainy|, |clean|) as in CycleGAN.
        val_images: held-out test images monitored during training (no model selection on them).
        val_crop: centre-crop side of the monitored images (keeps validation cheap); None = full image.
        predict_dir: a folder of images to derain with ``eval.py``.
        verify: decode every file once at setup (in parallel) so that a corrupt or truncated file stops the run
            before training.
        on_bad_file: ``error`` (stop, naming the file) or ``skip`` (drop it, with a listed report).
        seed: the split / synthetic-rain seed (same on every rank).
        root: base folder that the split's paths may refer to in the config (``${data.root}/...``).
    """

    def __init__(
        self,
        splits: FolderSplits | PairedFolderSplit | SyntheticRainSplits,
        crop_size: int = 256,
        batch_size: int = 1,
        num_workers: int = 2,
        samples_per_epoch: int | None = None,
        val_images: int = 4,
        val_crop: int | None = 256,
        predict_dir: str | None = None,
        verify: bool = True,
        on_bad_file: str = "error",
        cache_images: bool = True,
        pin_memory: bool = True,
        seed: int = 0,
        root: str | None = None,
    ) -> None:
        super().__init__()
        self.root = root
        if crop_size < 32:
            raise DataError(f"`data.crop_size` must be >= 32 (the non-local sampler's 16 px patches), got {crop_size}")
        self.splits_source = splits
        self.crop_size, self.batch_size, self.num_workers = crop_size, batch_size, num_workers
        self.samples_per_epoch, self.val_images, self.val_crop = samples_per_epoch, val_images, val_crop
        self.predict_dir, self.verify, self.cache_images = predict_dir, verify, cache_images
        self.on_bad_file = on_bad_file
        self.pin_memory, self.seed = pin_memory, seed
        self.splits: RainSplits | None = None

    # Images are small benchmarks: every rank builds the same split from the seed, no file exchange needed.
    def setup(self, stage: str | None = None) -> None:
        if self.splits is None and stage != "predict":
            self.splits = self.splits_source.build(self.seed)
            if self.verify:
                self.splits = self._without_bad_files(self.splits)

    def _without_bad_files(self, splits: RainSplits) -> RainSplits:
        bad = check_images(splits.files(), self.on_bad_file, self.run_dir())
        if not bad:
            return splits

        def good(item: ImageItem | None) -> bool:
            return item is None or item.path not in bad

        return RainSplits([i for i in splits.train_rainy if good(i)], [i for i in splits.train_clean if good(i)],
                          [(r, c) for r, c in splits.test if good(r) and good(c)])

    def has_test_data(self) -> bool:
        """Whether ``trainer.test`` has anything to evaluate (builds the split if needed)."""
        self.setup("test")
        return bool(self.splits and self.splits.test)

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, drop_last: bool = False) -> DataLoader:
        return self.make_loader(dataset, batch_size, shuffle, drop_last)

    def train_dataloader(self) -> DataLoader:
        assert self.splits is not None
        length = self.samples_per_epoch or max(len(self.splits.train_rainy), len(self.splits.train_clean))
        dataset = UnpairedCropDataset(self.splits.train_rainy, self.splits.train_clean, self.crop_size, length,
                                      cache=self.cache_images)
        return self._loader(dataset, self.batch_size, shuffle=True, drop_last=length >= 2 * self.batch_size)

    def val_dataloader(self) -> DataLoader | list:
        assert self.splits is not None
        if not self.splits.test or self.val_images <= 0:
            return []
        return self._loader(FullImageDataset(self.splits.test[: self.val_images], self.val_crop), 1, shuffle=False)

    def test_dataloader(self) -> DataLoader | list:
        assert self.splits is not None
        if not self.splits.test:
            return []
        return self._loader(FullImageDataset(self.splits.test), 1, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_dir is None:
            raise DataError("set `data.predict_dir` to a folder of rainy images to derain")
        files = list_images(self.predict_dir, key="data.predict_dir")
        if self.verify:
            bad = check_images(files, self.on_bad_file)
            files = [f for f in files if f not in bad]
        pairs = [(item, None) for item in _items(files)]
        return self._loader(FullImageDataset(pairs), 1, shuffle=False)


__all__ = [
    "FolderSplits",
    "FullImageDataset",
    "ImageItem",
    "PairedFolderSplit",
    "RainDataModule",
    "RainSplits",
    "SyntheticRainSplits",
    "UnpairedCropDataset",
]
