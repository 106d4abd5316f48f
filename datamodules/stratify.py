"""The one stratified split of the project: the held-out part of an image folder (CIFAR-10's seeded 8,000 / 2,000)
and of every DCoDR domain (DCoDR Sec. 4: 10 % of each)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

import numpy as np

Generator = Literal["python", "numpy"]


def stratified_split(labels: Sequence[int] | np.ndarray | None, count: int, fraction: float, seed: int,
                     generator: Generator = "python") -> tuple[list[int], list[int]]:
    """Sorted indices of a (1 - fraction, fraction) split of ``count`` items holding out the same fraction of every
    label (``labels=None``: one group), fixed by ``seed``.

    Groups are taken in ascending label order; each is shuffled and its first round(size x fraction) members are
    held out. ``generator`` picks the shuffle: ``python`` (``random.Random``; image folders) or ``numpy``
    (``np.random.default_rng``; domain data), so that the seeded splits every earlier run used stay the same.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"the held-out fraction must be in [0, 1], got {fraction}")
    if generator == "python":
        shuffle = random.Random(seed).shuffle
    elif generator == "numpy":
        shuffle = np.random.default_rng(seed).shuffle
    else:
        raise ValueError(f"generator must be 'python' or 'numpy', got {generator!r}")
    values = np.zeros(count, dtype=np.int64) if labels is None else np.asarray(labels)[:count]
    kept: list[int] = []
    held: list[int] = []
    for label in np.unique(values):
        members = np.flatnonzero(values == label).tolist()
        shuffle(members)
        n_held = round(len(members) * fraction)
        held += members[:n_held]
        kept += members[n_held:]
    return sorted(kept), sorted(held)
