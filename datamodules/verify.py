"""Every image file decoded once at setup, in parallel, so that a bad file stops the run before training.

The check decodes the pixels (not only the header): a truncated JPEG or PNG passes ``Image.verify`` but fails
here. JPEGs are decoded in draft mode (DCT scaling to about 1/8 of the side), which still reads every scan of
the file but costs a fraction of a full decode, so ImageNet's 1.28M files take minutes on a node's cores.
PIL releases the GIL while it decodes, so threads scale across cores without copying paths to processes.

Policies (``data.on_bad_file``): ``error`` stops with one line naming the first bad file (and how many there
are); ``skip`` drops them, warns with the list and writes it to ``<run folder>/bad_files.txt``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from PIL import Image
from pytorch_lightning.utilities import rank_zero_warn

from datamodules.images import ImageReadError

BadFilePolicy = Literal["error", "skip"]
POLICIES = ("error", "skip")


def decode_error(path: Path) -> str | None:
    """Why ``path`` does not decode, or None when it does."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (max(image.width // 8, 1), max(image.height // 8, 1)))
            image.load()
    except FileNotFoundError:
        return "file does not exist"
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        return f"{type(error).__name__}: {error}"
    return None


def find_bad_images(paths: Sequence[Path], workers: int | None = None) -> dict[Path, str]:
    """``{path: reason}`` of the files that do not decode, checked on ``workers`` threads (default: all cores)."""
    paths = list(paths)
    if not paths:
        return {}
    workers = workers or min(32, os.cpu_count() or 1)
    if workers == 1 or len(paths) < 64:
        reasons = [decode_error(p) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            reasons = list(pool.map(decode_error, paths, chunksize=256))
    return {p: r for p, r in zip(paths, reasons) if r is not None}


def _find_bad_images_sharded(paths: list[Path], workers: int | None) -> dict[Path, str]:
    """Under DDP every rank decodes its own 1/world of the files and the findings are shared."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return find_bad_images(paths, workers)
    rank, world = dist.get_rank(), dist.get_world_size()
    local = find_bad_images(paths[rank::world], workers)
    shared: list[dict[Path, str] | None] = [None] * world
    dist.all_gather_object(shared, local)
    return {p: r for part in shared if part for p, r in part.items()}


def check_images(paths: Sequence[Path], on_bad_file: BadFilePolicy = "error", report_dir: str | Path | None = None,
                 workers: int | None = None) -> set[Path]:
    """Decode every file; raise on a bad one (``error``) or return the set to drop (``skip``)."""
    if on_bad_file not in POLICIES:
        raise ValueError(f"`data.on_bad_file` must be one of {POLICIES}, got {on_bad_file!r}")
    bad = _find_bad_images_sharded(list(paths), workers)
    if not bad:
        return set()
    first, reason = next(iter(sorted(bad.items())))
    if on_bad_file == "error":
        more = f" (and {len(bad) - 1} more bad files; `data.on_bad_file=skip` drops them)" if len(bad) > 1 else ""
        raise ImageReadError(f"cannot read image '{first}': {reason}{more}")
    listing = "\n".join(f"{p}\t{r}" for p, r in sorted(bad.items()))
    where = ""
    if report_dir is not None:
        report = Path(report_dir) / "bad_files.txt"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(listing + "\n")
        where = f"; the list is in {report}"
    shown = ", ".join(str(p) for p in sorted(bad)[:5])
    rank_zero_warn(f"skipping {len(bad)} image files that do not decode: {shown}{where}")
    return set(bad)
