"""HCSC's hierarchical prototypes as persistent state: what a resumed run must find again
(HCSC Sec. 3.2; docs/references.md, H5)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lightning_modules.components.distributed import all_reduce_sum
from lightning_modules.components.kmeans import HierarchyLevel


class PrototypeHierarchy(nn.Module):
    """Per level l: prototypes ``centroids_l`` (M_l, D), concentrations ``concentration_l`` (M_l,), the label of
    every training sample ``assignments_l`` (N,), the parent probabilities ``parent_probability_l``
    (M_l, M_{l+1}) used by prototype selection, and ``limit_l`` (the largest assigned id, for the official
    off-by-one).

    All are persistent buffers, so they travel with checkpoints; their sizes depend on the data, so loading a
    state dict resizes them first.
    """

    def __init__(self, num_levels: int) -> None:
        super().__init__()
        self.num_levels = num_levels
        for level in range(num_levels):
            self.register_buffer(f"centroids_{level}", torch.zeros(0, 0))
            self.register_buffer(f"concentration_{level}", torch.zeros(0))
            self.register_buffer(f"assignments_{level}", torch.zeros(0, dtype=torch.long))
            self.register_buffer(f"limit_{level}", torch.zeros((), dtype=torch.long))
            if level < num_levels - 1:
                self.register_buffer(f"parent_probability_{level}", torch.zeros(0, 0))

    @property
    def ready(self) -> bool:
        return self.assignments_0.numel() > 0

    def centroids(self, level: int) -> torch.Tensor:
        return getattr(self, f"centroids_{level}")

    def concentration(self, level: int) -> torch.Tensor:
        return getattr(self, f"concentration_{level}")

    def parent_probability(self, level: int) -> torch.Tensor:
        return getattr(self, f"parent_probability_{level}")

    def limit(self, level: int) -> torch.Tensor:
        return getattr(self, f"limit_{level}")

    def assignments(self, level: int) -> torch.Tensor:
        return getattr(self, f"assignments_{level}")

    def labels(self, index: torch.Tensor) -> list[torch.Tensor]:
        """Level labels of the samples with dataset indices ``index``."""
        return [getattr(self, f"assignments_{level}")[index] for level in range(self.num_levels)]

    @torch.no_grad()
    def update(self, levels: list[HierarchyLevel], local_index: torch.Tensor, num_samples: int,
               distributed: bool = True) -> None:
        """Store a new clustering. ``local_index`` are the dataset indices of this rank's shard (each index held by
        exactly one rank); the full label vectors are assembled with one all-reduce per level."""
        if len(levels) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} levels, got {len(levels)}")
        for level, result in enumerate(levels):
            labels = torch.zeros(num_samples, dtype=torch.long, device=local_index.device)
            labels[local_index] = result.assignments + 1
            if distributed:
                all_reduce_sum(labels)
            if bool((labels == 0).any()):
                raise RuntimeError("some training samples were not clustered (the feature loader must cover the "
                                   "whole training set, each sample once)")
            labels -= 1
            self._set(f"centroids_{level}", result.centroids)
            self._set(f"concentration_{level}", result.concentration)
            self._set(f"assignments_{level}", labels)
            self._set(f"limit_{level}", labels.max())
            if level < self.num_levels - 1:
                upper = levels[level + 1]
                logits = result.centroids @ upper.centroids.T / upper.concentration
                self._set(f"parent_probability_{level}", torch.softmax(logits, dim=1))

    def _set(self, name: str, value: torch.Tensor) -> None:
        current = getattr(self, name)
        setattr(self, name, value.detach().to(device=current.device, dtype=current.dtype).clone())

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name, buffer in list(self._buffers.items()):
            key = prefix + name
            if key in state_dict and buffer is not None and state_dict[key].shape != buffer.shape:
                self._buffers[name] = torch.empty_like(state_dict[key], device=buffer.device, dtype=buffer.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
