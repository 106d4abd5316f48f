"""Tiny synthetic image sets written to disk, for tests and smoke runs (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def class_image(rng: np.random.Generator, label: int, num_classes: int, size: int) -> np.ndarray:
    """An image whose class shows in its hue and stripe orientation, with random phase, shift and noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = np.pi * label / num_classes
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
    hue = label / num_classes
    colour = np.array([0.5 + 0.5 * np.cos(2 * np.pi * (hue + s)) for s in (0.0, 1 / 3, 2 / 3)], dtype=np.float32)
    image = stripes[..., None] * colour + 0.15 * rng.standard_normal((size, size, 3)).astype(np.float32)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def write_image_folder(root: str | Path, num_classes: int = 4, per_class: int = 16, size: int = 32,
                       split: str | None = "train", seed: int = 0, labeled: bool = True) -> Path:
    """``<root>/<split>/<class_k>/<i>.png`` (or a flat folder when ``labeled`` is False); returns the split folder."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / split if split else Path(root)
    for label in range(num_classes):
        target = folder / f"class_{label}" if labeled else folder
        target.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            name = f"{i}.png" if labeled else f"{label}_{i}.png"
            Image.fromarray(class_image(rng, label, num_classes, size)).save(target / name)
    return folder


def write_voc_layout(root: str | Path, classes: list[str], per_split: dict[str, int], size: int = 40,
                     seed: int = 0) -> Path:
    """A tiny VOC2007 layout: ``JPEGImages/<id>.jpg`` showing one class each (its hue and stripes) and
    ``ImageSets/Main/<class>_<split>.txt`` (1 present, -1 absent; every 5th absent entry marked 0, difficult)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    image_id = 0
    for split, count in per_split.items():
        rows: dict[str, list[str]] = {name: [] for name in classes}
        for i in range(count):
            label = i % len(classes)
            name = f"{image_id:06d}"
            Image.fromarray(class_image(rng, label, len(classes), size)).save(root / "JPEGImages" / f"{name}.jpg")
            for c, klass in enumerate(classes):
                value = "1" if c == label else ("0" if i % 5 == 4 else "-1")
                rows[klass].append(f"{name} {value}")
            image_id += 1
        for klass, lines in rows.items():
            (root / "ImageSets" / "Main" / f"{klass}_{split}.txt").write_text("\n".join(lines) + "\n")
    return root
