"""Which checkpoint a run resumes from, decided before the trainer exists (so a failure writes nothing).

* ``ckpt_path=<file>``: that file, or a :class:`CheckpointError` naming the key when it does not exist.
* ``ckpt_path=last``: the newest checkpoint of *this* run folder by its step counter (``global_step``, then the
  epoch), a complete one (``last.ckpt``, ``epoch_*.ckpt``, Lightning's SLURM ``hpc_ckpt_*.ckpt``) before an
  exception snapshot of the same step; an exception snapshot older than a complete checkpoint never wins.
* ``ckpt_path=null``: a fresh run. In a folder that already holds checkpoints it stops (it never restores what it
  did not write), except for a requeued SLURM job (``SLURM_RESTART_COUNT`` > 0), which continues its own run.

No checkpoint runs code on load: every file is read with ``torch.load(weights_only=True)`` (tensors, numbers,
strings and plain containers), which holds every checkpoint this project writes and the official MoCo v2 / HCSC /
NLCL releases. A file that needs full unpickling stops with one line, unless the run opts in with
``trust_checkpoint=true`` (``trust_checkpoints``), set by ``train.py`` / ``eval.py`` before anything is built.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_warn

from contrastlab.errors import CheckpointError, UntrustedCheckpointError

EXCEPTION_FILENAME = "on_exception"  # written by callbacks.checkpointing.ExceptionCheckpoint
TRUST_KEY = "trust_checkpoint"
_policy = {"trust": False}  # process-wide: every rank runs train.py / eval.py and sets it from its config


def trust_checkpoints(enabled: bool) -> None:
    """Allow (``True``) or forbid (the default) full unpickling of checkpoint files in this process."""
    _policy["trust"] = bool(enabled)


def checkpoints_trusted() -> bool:
    """Whether this process may fully unpickle checkpoint files (``trust_checkpoint=true``)."""
    return _policy["trust"]


def trainer_load_options() -> dict[str, bool]:
    """``weights_only`` for ``Trainer.fit / test / predict`` where Lightning takes it (2.6+); older versions load
    with torch's default, which is ``weights_only=True`` from torch 2.6."""
    import inspect

    import pytorch_lightning as pl

    if "weights_only" not in inspect.signature(pl.Trainer.fit).parameters:
        return {}
    return {"weights_only": not checkpoints_trusted()}


def load_checkpoint(path: str | Path, key: str, mmap: bool = False) -> Any:
    """The content of a checkpoint file, read without running code unless ``trust_checkpoint=true`` was given."""
    try:
        return torch.load(path, map_location="cpu", mmap=mmap, weights_only=not checkpoints_trusted())
    except pickle.UnpicklingError:
        raise UntrustedCheckpointError(f"'{path}' (config key `{key}`) holds Python objects beyond tensors and plain "
                              "containers, and unpickling them can run code: load it only if you trust where it "
                              f"comes from, with `{TRUST_KEY}=true`") from None


def checkpoint_files(run_dir: str | Path) -> list[Path]:
    """Every checkpoint a run folder holds: ``checkpoints/*.ckpt`` and Lightning's ``hpc_ckpt_*.ckpt``."""
    run_dir = Path(run_dir)
    return sorted([*(run_dir / "checkpoints").glob("*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")])


def read_progress(path: Path) -> tuple[int, int] | None:
    """``(global_step, epoch)`` of a checkpoint, or None when the file cannot be read (cut short by a kill)."""
    try:
        state: dict[str, Any] = load_checkpoint(path, "ckpt_path", mmap=True)
    except UntrustedCheckpointError:
        raise
    except Exception as error:  # a truncated or foreign file is skipped, never restored
        rank_zero_warn(f"skipping unreadable checkpoint '{path}': {error}")
        return None
    return int(state.get("global_step", -1)), int(state.get("epoch", -1))


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step counter; complete ones win ties against exception snapshots."""
    best, best_key = None, None
    for path in checkpoint_files(run_dir):
        progress = read_progress(path)
        if progress is None:
            continue
        complete = not path.stem.startswith(EXCEPTION_FILENAME)
        key = (*progress, complete, path.stat().st_mtime)
        if best_key is None or key > best_key:
            best, best_key = path, key
    return best


def is_slurm_requeue() -> bool:
    """A SLURM job started again after a preemption or ``scontrol requeue`` (same job id, same run folder)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0


def resolve_ckpt_path(ckpt_path: str | None, run_dir: str | Path, key: str = "ckpt_path") -> str | None:
    """The checkpoint file to restore (see the module docstring), or None for a fresh start."""
    run_dir = Path(run_dir)
    if ckpt_path is None:
        existing = checkpoint_files(run_dir)
        if not existing:
            return None
        if is_slurm_requeue():
            found = newest_checkpoint(run_dir)
            return str(found) if found else None
        names = ", ".join(p.name for p in existing[:3])
        raise CheckpointError(f"run folder '{run_dir}' already holds checkpoints ({names}) of another run; resume "
                              f"it with `{key}=last`, or start this run in a new folder")
    if str(ckpt_path) == "last":
        found = newest_checkpoint(run_dir)
        if found is None:
            raise CheckpointError(f"`{key}=last`: no readable checkpoint in '{run_dir / 'checkpoints'}'; point "
                                  "hydra.run.dir at the folder of the run to resume")
        return str(found)
    path = Path(ckpt_path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{ckpt_path}' does not exist (config key `{key}`)")
    if read_progress(path) is None:  # a file that needs unpickling stops here too, before anything is built
        raise CheckpointError(f"checkpoint '{ckpt_path}' (config key `{key}`) cannot be read (see the warning above)")
    return str(path)
