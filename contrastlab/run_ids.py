"""Run ids: one folder per run, shared by every rank and node of that run, never by two runs."""

from __future__ import annotations

import os
import secrets
import time

_STARTED = time.strftime("%Y-%m-%d_%H-%M-%S")
_SUFFIX = secrets.token_hex(3)  # drawn once per process: two runs started in the same second never share a folder


def run_id() -> str:
    """One id per run, identical on every rank of that run, different between runs.

    Under SLURM: ``slurm-<job>[_<array task>][-step<n>]``; every rank of an ``srun`` step computes the same id,
    and a requeued job (same job id, ``SLURM_RESTART_COUNT`` > 0) finds its own folder and resumes there (see
    ``contrastlab.checkpoints``). Under torchrun: its rendezvous id, or with a static rendezvous (no id) rank 0's
    id sent to every rank (``rank_zero_run_id``). Otherwise the start time plus a random suffix; Lightning's own
    DDP launcher passes the resolved folder to the processes it starts.
    """
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        step = os.environ.get("SLURM_STEP_ID", "")
        step_part = f"-step{step}" if step.isdigit() and int(step) < 0xFFFFFFF0 else ""  # not batch/extern
        return f"slurm-{job}" + (f"_{task}" if task else "") + step_part
    elastic = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if elastic and elastic != "none":
        return f"torchrun-{elastic}"
    if elastic == "none" and int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_PORT" in os.environ:
        return rank_zero_run_id(f"{_STARTED}_{_SUFFIX}")
    return f"{_STARTED}_{_SUFFIX}"


def rank_zero_run_id(own: str, timeout_minutes: float = 10.0, rank: int | None = None) -> str:
    """Rank 0's run id, on every rank of a torchrun job with a static rendezvous (``--nnodes=N --node-rank=i
    --master-addr=...``), where the run id is "none" and each node would otherwise name its own folder.

    The id travels through the rendezvous store that torchrun's agent on the master node hosts at
    ``MASTER_ADDR:MASTER_PORT`` (``torch.distributed.TCPStore``), before any process group exists: rank 0 writes
    it, the other ranks wait for it. A restarted job (``TORCHELASTIC_RESTART_COUNT``) agrees on a new one.
    """
    from datetime import timedelta

    import torch.distributed as dist

    store = dist.TCPStore(os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ["MASTER_PORT"]),
                          is_master=False, timeout=timedelta(minutes=timeout_minutes))
    key = f"contrastlab/run_id/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if (int(os.environ.get("RANK", "0")) if rank is None else rank) == 0:
        store.set(key, own)
        return own
    return store.get(key).decode()
