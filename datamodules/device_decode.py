"""JPEG decoding on the accelerator: the loader workers read file bytes only, the batch is decoded on the device.

With ``data.decode_on_device=true`` (with ``data.device_views``) a worker's whole job is ``read_file``; the main
process hands the list of encoded images to torchvision's batched ``decode_jpeg`` on the training device (nvJPEG
on CUDA), resizes each decoded image to the ``base_size`` square (shorter side, antialiased, centre crop, as the
loader-side ``base_transform``) and stacks them as ``batch["raw"]``, which ``DeviceViews`` then augments: the same
``batch["views"]`` contract, so no method changes. On a CPU run the same code decodes on the CPU.

Files that are not JPEGs (PNG, WebP, ...), and JPEGs the device decoder rejects (CMYK, progressive variants nvJPEG
does not take), fall back to the CPU decoder for that file alone: one odd file must not stop an ImageNet epoch.
A file that no decoder can read stops the run with an error naming it (setup-time verification catches these
before training).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms.v2 import functional as TF

from datamodules.images import ImageReadError

_JPEG_MAGIC = b"\xff\xd8\xff"


class EncodedImageDataset(Dataset):
    """The raw bytes of each file (uint8, 1-D) with its index, path and (when known) label."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int] | None) -> None:
        self.files, self.labels = [str(f) for f in files], labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = {"encoded": read_file(self.files[index]), "index": index, "path": self.files[index]}
        if self.labels is not None:
            sample["label"] = self.labels[index]
        return sample


def collate_encoded(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Encoded images stay a list (their lengths differ); everything else collates as usual."""
    batch = default_collate([{k: v for k, v in s.items() if k not in ("encoded", "path")} for s in samples])
    batch["encoded"] = [s["encoded"] for s in samples]
    batch["path"] = [s["path"] for s in samples]
    return batch


def _is_jpeg(data: torch.Tensor) -> bool:
    return data.numel() >= 3 and bytes(data[:3].tolist()) == _JPEG_MAGIC


def _square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Shorter side to ``size`` (antialiased), centre crop to ``size`` x ``size``; uint8 in, uint8 out."""
    return TF.center_crop(TF.resize(image, size, antialias=True), [size, size])


def decode_batch(encoded: list[torch.Tensor], paths: Sequence[str], size: int,
                 device: torch.device | str) -> torch.Tensor:
    """Decode ``encoded`` (CPU byte tensors) on ``device`` into a (B, 3, size, size) uint8 batch."""
    device = torch.device(device)
    images: list[torch.Tensor | None] = [None] * len(encoded)
    jpegs = [i for i, data in enumerate(encoded) if _is_jpeg(data)]
    if jpegs:
        try:
            decoded = decode_jpeg([encoded[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
            for i, image in zip(jpegs, decoded):
                images[i] = image
        except RuntimeError:  # one file the batched decoder rejects: decode the JPEGs one by one below
            pass
    for i, image in enumerate(images):
        if image is not None:
            continue
        try:
            images[i] = decode_image(encoded[i], mode=ImageReadMode.RGB).to(device, non_blocking=True)
        except RuntimeError as error:
            raise ImageReadError(f"cannot decode image '{paths[i]}': {error}") from error
    return torch.stack([_square(image, size) for image in images])
