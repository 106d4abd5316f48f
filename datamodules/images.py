"""Image files in, clear errors out.

Every reader here names the offending file or folder (and, where the caller says so, the config key
that pointed at it), converts grayscale, palette, 16-bit and RGBA images to RGB, and never silently
skips a file: a dataset that lost images without telling is worse than one that stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from contrastlab.errors import DataError, MissingPathError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


class ImageReadError(DataError, RuntimeError):
    """An image file exists but cannot be decoded."""


def _where(key: str | None) -> str:
    return f" (config key `{key}`)" if key else ""


def list_images(folder: str | Path, *, key: str | None = None, recursive: bool = False) -> list[Path]:
    """Sorted image files in ``folder``; raises if the folder is missing or holds no images.

    Sorting is by natural order (``2.png`` before ``10.png``) so that numbered benchmarks keep their order.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise MissingPathError(f"image folder '{folder}' does not exist{_where(key)}")
    if not folder.is_dir():
        raise MissingPathError(f"'{folder}' is not a folder{_where(key)}")
    pattern = "**/*" if recursive else "*"
    files = [p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise DataError(
            f"image folder '{folder}' holds no images{_where(key)}; "
            f"looked for {', '.join(IMAGE_EXTENSIONS)}"
        )
    return sorted(files, key=natural_key)


def natural_key(path: str | Path) -> tuple:
    """Sort key that orders embedded numbers numerically: ``img2`` < ``img10``."""
    import re

    parts = re.split(r"(\d+)", Path(path).name)
    return tuple(int(p) if p.isdigit() else p.lower() for p in parts)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    16-bit and 32-bit grayscale are rescaled by their range (PIL's own ``convert`` clips them); RGBA and LA
    are composited on black, which is what dropping the alpha channel of a premultiplied image means.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        array = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image file fully and return it as RGB; the error names the file."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except FileNotFoundError:
        raise MissingPathError(f"image file '{path}' does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"cannot read image '{path}': {error}") from error


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """uint8 RGB PIL image -> float tensor (3, H, W) in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def tensor_to_uint8(image: torch.Tensor) -> np.ndarray:
    """Tensor (3, H, W) in [0, 1] -> uint8 array (H, W, 3), rounded as image files store it."""
    image = image.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8)
    return image.permute(1, 2, 0).cpu().numpy()


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Save a (3, H, W) tensor in [0, 1] as an 8-bit image file, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(tensor_to_uint8(image)).save(path)
    return path


def match_pairs(
    inputs: Sequence[Path], targets: Sequence[Path], *, input_dir: Path, target_dir: Path, target_suffix: str = ""
) -> list[tuple[Path, Path]]:
    """Pair files of two folders by file stem (a target's stem less ``target_suffix``, e.g. SPA-Data's ``gt``);
    any unpaired name is an error listing the culprits."""
    by_stem_in = {p.stem: p for p in inputs}
    strip = len(target_suffix)
    by_stem_tg = {(p.stem[:-strip] if strip and p.stem.endswith(target_suffix) else p.stem): p for p in targets}
    only_in = sorted(set(by_stem_in) - set(by_stem_tg), key=natural_key)
    only_tg = sorted(set(by_stem_tg) - set(by_stem_in), key=natural_key)
    if only_in or only_tg:
        lines = []
        if only_in:
            lines.append(f"in '{input_dir}' without a match in '{target_dir}': {', '.join(only_in[:10])}")
        if only_tg:
            lines.append(f"in '{target_dir}' without a match in '{input_dir}': {', '.join(only_tg[:10])}")
        raise DataError("paired folders do not match by file name; " + "; ".join(lines))
    return [(by_stem_in[s], by_stem_tg[s]) for s in sorted(by_stem_in, key=natural_key)]
