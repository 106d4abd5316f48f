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

from datamodules.rain.datamodule import RainDataModule
from datamodules.rain.datasets import FullImageDataset, UnpairedCropDataset
from datamodules.rain.splits import (
    FolderSplits,
    ImageItem,
    PairedFolderSplit,
    RainSplits,
)
from datamodules.rain.synthetic_splits import SyntheticRainSplits, skimage_photo

__all__ = [
    "FolderSplits", "FullImageDataset", "ImageItem", "PairedFolderSplit", "RainDataModule", "RainSplits",
    "SyntheticRainSplits", "UnpairedCropDataset", "skimage_photo",
]
