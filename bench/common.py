"""Helpers shared by the benchmark scripts: CLI runs with a time budget, and timed step loops."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def time_budget(minutes: float) -> str:
    """A ``trainer.max_time`` override for a budget in minutes."""
    return f"trainer.max_time=00:00:{int(minutes):02d}:{int(round(minutes % 1 * 60)):02d}"


def run_cli(script: str, run_dir: Path, overrides: list[str], reuse: bool = False) -> dict:
    """Run ``train.py`` / ``eval.py`` with ``overrides`` in ``run_dir``; its metrics.json plus wall time and, when
    a CSV log exists, the epochs and optimiser steps reached. ``reuse`` keeps a finished run (one with a
    metrics.json) instead of running it again, so an interrupted benchmark resumes where it stopped."""
    wall_file = run_dir / "bench_wall.json"
    if not (reuse and (run_dir / "metrics.json").exists()):
        command = [sys.executable, script, *overrides, "print_config=false", "trainer.enable_progress_bar=false",
                   f"hydra.run.dir={run_dir}"]
        start = time.time()
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        wall_file.write_text(json.dumps({"wall_minutes": (time.time() - start) / 60}))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if wall_file.exists():
        metrics.update(json.loads(wall_file.read_text()))
    log = run_dir / "csv" / "metrics.csv"
    if log.exists():
        rows = [r for r in csv.DictReader(log.open()) if r.get("step")]
        if rows:
            metrics["steps"] = max(int(r["step"]) for r in rows)
            metrics["epochs"] = 1 + max(int(r["epoch"]) for r in rows if r.get("epoch"))
    return metrics


def timed_steps(step: Callable[[], None], warmup: int, steps: int, device: str) -> float:
    """Seconds for ``steps`` calls of ``step`` after ``warmup`` untimed ones (CUDA synchronised)."""
    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start
