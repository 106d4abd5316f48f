"""Labeled-domain data for DCoDR: every image has a domain id; content factors are known for evaluation only.

Value range: images in [0, 1] (DCoDR feeds its encoder un-normalised images).

Batch contract:
    ``{"image": B x 3 x H x W, "positive": B x 3 x H x W, "domain": B, "index": B, "factors": {name: B}}``
    ``positive`` is the same image under one random augmentation; ``factors`` only where known, never used by
    training.

Sources (Hydra-instantiated): ``ShapesSource`` (procedural, known factors), ``Cars3DSource`` (the public
``cars/car_XXX_mesh.mat`` layout), ``DomainFolderSource`` (``<domain>/<image>`` plus an optional CSV of factor
labels), ``NpzSource`` (the arrays DCoDR's preparation scripts write: SmallNORB, CelebA, Edges2Shoes) and
``Shapes3DSource`` (DeepMind's ``3dshapes.h5``).
"""

from datamodules.domains.datamodule import DomainDataModule
from datamodules.domains.datasets import BalancedDomainBatchSampler, DomainDataset, WholeBatches
from datamodules.domains.sources import (
    Cars3DSource,
    DomainData,
    DomainFolderSource,
    MissingArrayError,
    NpzSource,
    Shapes3DSource,
    ShapesSource,
)

__all__ = [
    "BalancedDomainBatchSampler", "Cars3DSource", "DomainData", "DomainDataModule", "DomainDataset",
    "DomainFolderSource", "MissingArrayError", "NpzSource", "Shapes3DSource", "ShapesSource", "WholeBatches",
]
