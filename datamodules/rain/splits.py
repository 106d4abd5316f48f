"""Where the rainy and clean images come from: split builders with ``load(seed) -> RainSplits`` (``FolderSplits``,
``PairedFolderSplit``; ``SyntheticRainSplits`` in ``synthetic_splits.py``) and the records they return.

Three roles, never sharing an image: training (rainy and clean sets), validation pairs (``val``: the monitors and
every choice made during development) and test pairs (``test``: reported once, at the end)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from contrastlab.errors import DataError, MissingPathError
from datamodules.base import DataSource
from datamodules.images import list_images, load_rgb, match_pairs, pil_to_tensor


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
    """Lists of images for each role; ``test`` and ``val`` hold (rainy, clean-or-None) pairs."""

    train_rainy: list[ImageItem]
    train_clean: list[ImageItem]
    test: list[tuple[ImageItem, ImageItem | None]] = field(default_factory=list)
    val: list[tuple[ImageItem, ImageItem | None]] = field(default_factory=list)

    def files(self) -> list[Path]:
        items = list(self.train_rainy) + list(self.train_clean)
        for rainy, clean in [*self.test, *self.val]:
            items.append(rainy)
            if clean is not None:
                items.append(clean)
        return [item.path for item in items if item.path is not None]


class RainSource(DataSource):
    """A rain data source: ``load(seed)`` gives the unpaired rainy / clean training sets and the held-out pairs."""

    def build(self, seed: int) -> RainSplits:
        """The old name of ``load`` (configs and scripts written before ``DataSource``)."""
        return self.load(seed)


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


class FolderSplits(RainSource):
    """Unpaired training folders plus optional test folders.

    Args:
        rainy_dir: rainy training images (domain A). With ``cyclegan_root`` set, defaults to ``trainA``.
        clean_dir: clean training images of other scenes (domain B); ``trainB`` under ``cyclegan_root``.
        test_dir: a paired folder (``input/`` rainy, ``target/`` clean, same file names) for PSNR/SSIM.
        test_rainy_dir: rainy test images without ground truth (real rain); ``testA`` under ``cyclegan_root``.
        cyclegan_root: a CycleGAN-layout folder (``trainA``, ``trainB``, optional ``testA``).
        *_ids: keep only files whose stem is in this range, e.g. ``"1-80"`` (numbered benchmarks).
        val_dir: a paired folder (as ``test_dir``) for validation; ``val_ids`` picks its scenes (keep them out of
            the training and test ids).
        input_subdir / target_subdir: the paired test folder's sub-folders (SPA-Data: ``rain`` / ``gt``).
        target_suffix: the clean file's stem is the rainy one's plus this (SPA-Data: ``gt``, ``0001gt.png``).
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
        target_suffix: str = "",
        val_dir: str | None = None,
        val_ids: str | None = None,
    ) -> None:
        if cyclegan_root is not None:
            root = Path(cyclegan_root)
            rainy_dir = rainy_dir or str(root / "trainA")
            clean_dir = clean_dir or str(root / "trainB")
            if test_rainy_dir is None and (root / "testA").is_dir():
                test_rainy_dir = str(root / "testA")
        self.rainy_dir, self.clean_dir = rainy_dir, clean_dir
        self.test_dir, self.test_rainy_dir = test_dir, test_rainy_dir
        self.ids = {"rainy": rainy_ids, "clean": clean_ids, "test": test_ids, "test_rainy": test_rainy_ids,
                    "val": val_ids}
        self.val_dir = val_dir
        self.input_subdir, self.target_subdir, self.target_suffix = input_subdir, target_subdir, target_suffix

    def load(self, seed: int = 0) -> RainSplits:
        if self.rainy_dir is None or self.clean_dir is None:
            raise DataError("`data.splits.rainy_dir` and `data.splits.clean_dir` (or `cyclegan_root`) are required")
        rainy = _select(list_images(self.rainy_dir, key="data.splits.rainy_dir"), self.ids["rainy"],
                        key="data.splits.rainy_ids")
        clean = _select(list_images(self.clean_dir, key="data.splits.clean_dir"), self.ids["clean"],
                        key="data.splits.clean_ids")
        test = self._pairs(self.test_dir, "test")
        val = self._pairs(self.val_dir, "val")
        if self.test_rainy_dir is not None:
            files = _select(list_images(self.test_rainy_dir, key="data.splits.test_rainy_dir"),
                            self.ids["test_rainy"], key="data.splits.test_rainy_ids")
            test.extend((item, None) for item in _items(files))
        return RainSplits(_items(rainy), _items(clean), test, val)

    def _pairs(self, folder: str | None, role: str) -> list[tuple[ImageItem, ImageItem | None]]:
        """The (rainy, clean) pairs of a paired folder whose stems ``<role>_ids`` names (all when unset)."""
        if folder is None:
            return []
        wanted = _parse_ids(self.ids[role])
        pairs = _paired_files(Path(folder), self.input_subdir, self.target_subdir, f"data.splits.{role}_dir",
                              self.target_suffix)
        return [(ImageItem(r.name, r), ImageItem(c.name, c)) for r, c in pairs if wanted is None or r.stem in wanted]


def _paired_files(root: Path, input_subdir: str, target_subdir: str, key: str,
                  target_suffix: str = "") -> list[tuple[Path, Path]]:
    input_dir, target_dir = root / input_subdir, root / target_subdir
    if not root.exists():
        raise MissingPathError(f"paired folder '{root}' does not exist (config key `{key}`)")
    inputs = list_images(input_dir, key=key)
    targets = list_images(target_dir, key=key)
    return match_pairs(inputs, targets, input_dir=input_dir, target_dir=target_dir, target_suffix=target_suffix)


class PairedFolderSplit(RainSource):
    """A fair unsupervised protocol on one paired folder (Rain100L layout ``input/N``, ``target/N``).

    The pairs are shuffled by ``seed`` and cut into four disjoint scene sets: ``n_test`` held-out pairs
    (PSNR/SSIM, reported), ``n_rainy`` scenes whose *rainy* image is used for training, ``n_clean`` other scenes
    whose *clean* image is used for training, and ``n_val`` validation pairs from the scenes left over (the
    monitors; taken after the others, so adding them leaves the other three sets as they were). No test or
    validation scene's clean image is ever seen in training.
    """

    def __init__(
        self,
        root: str,
        n_rainy: int | None = None,
        n_clean: int | None = None,
        n_test: int = 20,
        input_subdir: str = "input",
        target_subdir: str = "target",
        n_val: int = 0,
    ) -> None:
        self.root, self.n_rainy, self.n_clean, self.n_test, self.n_val = root, n_rainy, n_clean, n_test, n_val
        self.input_subdir, self.target_subdir = input_subdir, target_subdir

    def load(self, seed: int = 0) -> RainSplits:
        pairs = _paired_files(Path(self.root), self.input_subdir, self.target_subdir, "data.splits.root")
        order = list(range(len(pairs)))
        random.Random(seed).shuffle(order)
        n_test = self.n_test
        rest = len(pairs) - n_test
        n_rainy = self.n_rainy if self.n_rainy is not None else rest // 2
        n_clean = self.n_clean if self.n_clean is not None else rest - n_rainy
        used = n_test + n_rainy + n_clean
        if n_test < 1 or n_rainy < 1 or n_clean < 1 or self.n_val < 0 or used + self.n_val > len(pairs):
            raise DataError(
                f"cannot split {len(pairs)} pairs of '{self.root}' into n_test={n_test}, n_rainy={n_rainy}, "
                f"n_clean={n_clean}, n_val={self.n_val} disjoint scenes (config keys `data.splits.n_*`)"
            )
        test_ids = sorted(order[:n_test])
        rainy_ids = sorted(order[n_test:n_test + n_rainy])
        clean_ids = sorted(order[n_test + n_rainy:used])
        val_ids = sorted(order[used:used + self.n_val])

        def as_pairs(ids: list[int]) -> list[tuple[ImageItem, ImageItem | None]]:
            return [(ImageItem(pairs[i][0].name, pairs[i][0]), ImageItem(pairs[i][1].name, pairs[i][1])) for i in ids]

        return RainSplits(train_rainy=_items([pairs[i][0] for i in rainy_ids]),
                          train_clean=_items([pairs[i][1] for i in clean_ids]), test=as_pairs(test_ids),
                          val=as_pairs(val_ids))
