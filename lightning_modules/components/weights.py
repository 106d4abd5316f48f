"""The one checkpoint loader: the weights a network takes are the checkpoint entries that name its own parameters.

Every pretrained-weight option (``model.backbone.checkpoint``, ``model.encoder.head_checkpoint``,
``model.pretrained_b`` / ``pretrained_r``) goes through ``load_matching_weights``: an entry's name is compared
with the network's own names after a leading run of the given ``prefixes`` is stripped (``module.`` of DDP,
``encoder_q.`` of MoCo, ``G_R.`` of the network's place in a project checkpoint, ...), so a prefix the network
does not ask for (``G_B.`` when loading G_R) never matches. Loading is strict: every weight of the network must
be found with its shape, or the error names the checkpoint, the config key and what is missing. Files are read
with ``weights_only=True`` (no code runs) unless the run says ``trust_checkpoint=true``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from contrastlab.checkpoints import load_checkpoint
from contrastlab.errors import CheckpointError, MissingPathError, WeightsMismatchError


def read_state_dict(path: str | Path, key: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: a Lightning / MoCo ``state_dict`` entry or a bare state dict (read without
    running code unless ``trust_checkpoint=true``: ``contrastlab.checkpoints.load_checkpoint``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"checkpoint '{path}' does not exist (config key `{key}`)")
    state = load_checkpoint(path, key)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise CheckpointError(f"'{path}' holds no state dict (config key `{key}`)")
    return state


def strip_prefixes(name: str, prefixes: Sequence[str]) -> str:
    """``name`` without any leading run of ``prefixes`` (in any order)."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in prefixes:
            if prefix and name.startswith(prefix):
                name, stripped = name[len(prefix):], True
    return name


def load_matching_weights(net: nn.Module, path: str | Path, key: str, prefixes: Sequence[str] = ()) -> None:
    """Load into ``net`` (strictly) the entries of the checkpoint at ``path`` that name its own weights."""
    wanted = net.state_dict()
    found: dict[str, torch.Tensor] = {}
    for name, value in read_state_dict(path, key).items():
        own = strip_prefixes(name, prefixes)
        if own in wanted and own not in found and tuple(value.shape) == tuple(wanted[own].shape):
            found[own] = value
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise WeightsMismatchError(f"checkpoint '{path}' (config key `{key}`) lacks {len(missing)} of the "
                              f"{len(wanted)} weights of the {type(net).__name__} it loads into, e.g. "
                              f"{missing[:3]} (prefixes stripped: {list(prefixes)})")
    net.load_state_dict(found, strict=True)
