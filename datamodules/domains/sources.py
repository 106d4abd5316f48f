"""Labeled-domain sources with ``load() -> DomainData``: procedural shapes, Cars3D, image folders, npz arrays,
Shapes3D."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from contrastlab.errors import DataError, MissingPathError
from datamodules.base import DataSource
from datamodules.images import list_images, load_rgb, natural_key
from datamodules.shapes import FACTORS as SHAPE_FACTORS
from datamodules.shapes import SHAPES, sample_shapes


@dataclass
class DomainData:
    """Images (N, H, W, 3) uint8, domain ids (N,), categorical factor labels {name: (N,)}, domain names, and
    continuous factors {name: (N,) or (N, K) float} (CelebA's landmarks), which are probed by regression."""

    images: np.ndarray
    domains: np.ndarray
    factors: dict[str, np.ndarray] = field(default_factory=dict)
    domain_names: list[str] = field(default_factory=list)
    factor_levels: dict[str, int] = field(default_factory=dict)
    continuous: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.images)
        columns = {**self.factors, **self.continuous}
        if len(self.domains) != n or any(len(v) != n for v in columns.values()):
            raise DataError("images, domains and every factor must have the same length")
        if set(self.factors) & set(self.continuous):
            raise DataError(f"factors {sorted(set(self.factors) & set(self.continuous))} are both categorical and "
                             "continuous")
        self.continuous = {k: np.asarray(v, dtype=np.float32) for k, v in self.continuous.items()}
        if not self.domain_names:
            self.domain_names = [str(d) for d in range(int(self.domains.max()) + 1)]
        for name, values in self.factors.items():
            self.factor_levels.setdefault(name, int(values.max()) + 1)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Area-resize uint8 (N, H, W, 3) images to ``size`` x ``size`` (antialiased), in chunks."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    out = []
    for start in range(0, len(images), 1024):
        chunk = torch.from_numpy(images[start:start + 1024]).permute(0, 3, 1, 2).float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(chunk.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


class ShapesSource(DataSource):
    """Procedural shapes (``datamodules.shapes``): 4 domains, 5 content factors, no download."""

    def __init__(self, per_domain: int = 1000, size: int = 64, seed: int = 0) -> None:
        self.per_domain, self.size, self.seed = per_domain, size, seed

    def load(self, seed: int = 0) -> DomainData:
        images, domains, factors = sample_shapes(self.per_domain, self.size, self.seed)
        return DomainData(images, domains, factors, list(SHAPES), dict(SHAPE_FACTORS))


class Cars3DSource(DataSource):
    """Cars3D in its public layout (``<root>/car_XXX_mesh.mat`` and ``list.txt``; disentanglement_lib's reader).

    Domain = car model (183); content = azimuth (24), elevation (4) and the pose ``content`` = elevation x 24 +
    azimuth (96, the DCoDR evaluation). Images are resized 128 -> ``size`` once and cached as ``.npz`` beside
    ``cache_dir`` (default: ``~/.cache/contrastlab``) keyed by the folder and size.
    """

    def __init__(self, root: str, size: int = 64, cache_dir: str | None = None, max_cars: int | None = None) -> None:
        self.root, self.size, self.max_cars = Path(root).expanduser(), size, max_cars
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else Path.home() / ".cache" / "contrastlab"

    def _files(self) -> list[Path]:
        folder = self.root / "cars" if (self.root / "cars").is_dir() else self.root
        if not folder.is_dir():
            raise MissingPathError(f"Cars3D folder '{self.root}' does not exist (config key `data.source.root`)")
        listing = folder / "list.txt"
        if listing.exists():
            names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
            files = [folder / (n if n.endswith(".mat") else f"{n}.mat") for n in names]
        else:
            files = sorted(folder.glob("*_mesh.mat"), key=natural_key)
        missing = [f for f in files if not f.exists()]
        if missing or not files:
            named = [m.name for m in missing[:3]] or "none found"
            raise MissingPathError(f"Cars3D .mat files missing in '{folder}': {named}")
        return files[: self.max_cars] if self.max_cars else files

    def load(self, seed: int = 0) -> DomainData:
        files = self._files()
        key = hashlib.sha1(f"{files[0].parent.resolve()}|{len(files)}|{self.size}".encode()).hexdigest()[:12]
        cache = self.cache_dir / f"cars3d_{self.size}_{key}.npz"
        if cache.exists():
            arrays = np.load(cache)
            images, domains = arrays["images"], arrays["domains"]
            azimuth, elevation = arrays["azimuth"], arrays["elevation"]
        else:
            from scipy.io import loadmat

            parts = []
            for file in files:
                try:
                    im = loadmat(file)["im"]  # (128, 128, 3, 24 azimuths, 4 elevations)
                except Exception as error:  # noqa: BLE001 - scipy raises several types for bad files
                    raise OSError(f"cannot read Cars3D file '{file}': {error}") from error
                parts.append(_resize(np.ascontiguousarray(im.transpose(4, 3, 0, 1, 2).reshape(-1, *im.shape[:3])),
                                     self.size))
            images = np.concatenate(parts)
            domains = np.repeat(np.arange(len(files)), 96)
            elevation = np.tile(np.repeat(np.arange(4), 24), len(files))
            azimuth = np.tile(np.arange(24), 4 * len(files))
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            np.savez(cache, images=images, domains=domains, azimuth=azimuth, elevation=elevation)
        factors = {"content": elevation * 24 + azimuth, "azimuth": azimuth, "elevation": elevation}
        names = [f.stem.replace("_mesh", "") for f in files]
        return DomainData(images, domains, factors, names, {"content": 96, "azimuth": 24, "elevation": 4})


class DomainFolderSource(DataSource):
    """``<root>/<domain>/<image>``; an optional CSV (columns ``path`` relative to ``root``, then one column per
    factor) gives content labels for evaluation: integer or name columns are categorical, columns with decimal
    numbers are continuous (probed by regression)."""

    def __init__(self, root: str, factors_csv: str | None = None, size: int = 64) -> None:
        self.root, self.factors_csv, self.size = Path(root).expanduser(), factors_csv, size

    def load(self, seed: int = 0) -> DomainData:
        if not self.root.is_dir():
            raise MissingPathError(f"domain folder '{self.root}' does not exist (config key `data.source.root`)")
        domain_dirs = sorted((d for d in self.root.iterdir() if d.is_dir()), key=lambda p: natural_key(p.name))
        if len(domain_dirs) < 2:
            raise DataError(f"'{self.root}' needs one sub-folder per domain (found {len(domain_dirs)})")
        paths, domains = [], []
        for d, folder in enumerate(domain_dirs):
            files = list_images(folder, key="data.source.root", recursive=True)
            paths += files
            domains += [d] * len(files)
        images = np.stack([np.asarray(load_rgb(p).resize((self.size, self.size))) for p in paths])
        factors: dict[str, np.ndarray] = {}
        continuous: dict[str, np.ndarray] = {}
        if self.factors_csv:
            factors, continuous = self._read_factors(paths)
        return DomainData(images, np.asarray(domains), factors, [d.name for d in domain_dirs], continuous=continuous)

    def _read_factors(self, paths: Sequence[Path]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        table = Path(self.factors_csv)
        if not table.exists():
            raise MissingPathError(f"factor table '{table}' does not exist (config key `data.source.factors_csv`)")
        with table.open() as handle:
            rows = list(csv.DictReader(handle))
        if not rows or "path" not in rows[0]:
            raise DataError(f"'{table}' needs a header with a `path` column and one column per factor")
        by_path = {str((self.root / r["path"]).resolve()): r for r in rows}
        columns = [c for c in rows[0] if c != "path"]
        missing = [str(p) for p in paths if str(p.resolve()) not in by_path]
        if missing:
            raise DataError(f"'{table}' has no row for {len(missing)} images, e.g. {missing[:3]}")
        factors, continuous = {}, {}
        for column in columns:
            values = [by_path[str(p.resolve())][column] for p in paths]
            if all(_parses_as(v, int) for v in values):
                factors[column] = np.asarray([int(v) for v in values])
            elif all(_parses_as(v, float) for v in values):
                continuous[column] = np.asarray([float(v) for v in values])
            else:
                codes = {v: i for i, v in enumerate(sorted(set(values)))}
                factors[column] = np.asarray([codes[v] for v in values])
        return factors, continuous


def _parses_as(text: str, kind: type) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


class NpzSource(DataSource):
    """Arrays in one ``.npz`` (DCoDR's ``cache/preprocess/<name>.npz``): images uint8 (N, H, W[, C]), domain ids,
    categorical factor columns (``factor_keys``) and continuous ones (``continuous_keys``, (N,) or (N, K): CelebA's
    136 landmark coordinates)."""

    def __init__(self, path: str, image_key: str = "imgs", domain_key: str = "classes",
                 factor_keys: Sequence[str] = (), continuous_keys: Sequence[str] = (), size: int = 64) -> None:
        self.path, self.image_key, self.domain_key = Path(path).expanduser(), image_key, domain_key
        self.factor_keys, self.continuous_keys, self.size = list(factor_keys), list(continuous_keys), size

    def load(self, seed: int = 0) -> DomainData:
        if not self.path.exists():
            raise MissingPathError(f"array file '{self.path}' does not exist (config key `data.source.path`)")
        arrays = np.load(self.path)
        for key in [self.image_key, self.domain_key, *self.factor_keys, *self.continuous_keys]:
            if key not in arrays:
                raise MissingArrayError(f"'{self.path}' has no array `{key}`; it holds {sorted(arrays.files)}")
        images = arrays[self.image_key]
        if images.ndim == 3:
            images = images[..., None]
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)  # grey data tiled to RGB (as DCoDR's encoder does)
        if images.dtype != np.uint8:
            scale = 255.0 if images.max() <= 1 else 1.0  # float images in [0, 1] or already 0-255
            images = np.clip(images * scale, 0, 255).round().astype(np.uint8)
        factors = {k: np.asarray(arrays[k]).astype(np.int64) for k in self.factor_keys}
        continuous = {k: arrays[k] for k in self.continuous_keys}  # DomainData makes them float32
        domains = np.asarray(arrays[self.domain_key]).astype(np.int64)
        return DomainData(_resize(images, self.size), domains, factors, continuous=continuous)


class Shapes3DSource(DataSource):
    """DeepMind's ``3dshapes.h5`` (480,000 images): domain = shape (4); content = floor, wall, object hue, scale,
    orientation. ``subset`` draws a random subset (DCoDR trains on 50K). Needs ``h5py``."""

    NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")

    def __init__(self, path: str, subset: int | None = 50_000, seed: int = 0, size: int = 64) -> None:
        self.path, self.subset, self.seed, self.size = Path(path).expanduser(), subset, seed, size

    def load(self, seed: int = 0) -> DomainData:
        try:
            import h5py
        except ImportError as error:
            raise ImportError("reading 3dshapes.h5 needs h5py: pip install h5py") from error
        if not self.path.exists():
            raise MissingPathError(f"'{self.path}' does not exist (config key `data.source.path`)")
        with h5py.File(self.path, "r") as handle:
            total = handle["images"].shape[0]
            index = np.arange(total)
            if self.subset and self.subset < total:
                index = np.sort(np.random.default_rng(self.seed).choice(total, self.subset, replace=False))
            images = handle["images"][index]
            values = handle["labels"][index]
        codes = {name: np.unique(values[:, i], return_inverse=True)[1] for i, name in enumerate(self.NAMES)}
        domains = codes.pop("shape")
        return DomainData(_resize(images, self.size), domains, codes)


class MissingArrayError(DataError, KeyError):
    """An array the config names is not in the file."""
