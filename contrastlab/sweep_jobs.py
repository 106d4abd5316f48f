"""The jobs of a sweep: reading run folders (config, overrides, metrics, status), grouping the jobs that differ
only in their seed, and the statistics of a group (``describe``). Reports are written by ``contrastlab.aggregate``."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Overrides that never make two jobs different experiments.
IGNORED_KEYS = ("seed", "ckpt_path", "hydra.*", "print_config", "trainer.enable_progress_bar", "paths.*")
# Folders of a run that hold no further job (pruned from the walk: a run folder holds thousands of files).
_NOT_JOBS = {".hydra", ".submitit", "checkpoints", "csv", "images", "wandb", "tensorboard", "test_outputs",
             "predictions", "__pycache__"}


@dataclass(frozen=True)
class Stats:
    """Summary of one metric over the seeds of a group (``std`` is the sample standard deviation; NaN for n = 1)."""

    n: int
    mean: float
    std: float
    min: float
    max: float

    def text(self, digits: int = 3) -> str:
        spread = f" ± {self.std:.{digits}f}" if self.n > 1 else ""
        return f"{self.mean:.{digits}f}{spread}"


def describe(values: Iterable[float]) -> Stats:
    """n, mean, sample std, min and max of ``values`` (at least one)."""
    data = [float(v) for v in values]
    if not data:
        raise ValueError("describe() needs at least one value")
    std = statistics.stdev(data) if len(data) > 1 else math.nan
    return Stats(len(data), statistics.fmean(data), std, min(data), max(data))


@dataclass
class Job:
    """One run folder of a sweep."""

    folder: Path
    overrides: list[str]
    config: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "finished"  # finished | failed | unfinished
    error: str = ""

    @property
    def seed(self) -> Any:
        return self.config.get("seed")


def find_jobs(paths: Sequence[str | Path]) -> list[Job]:
    """Every job folder below ``paths`` (a folder with ``.hydra/config.yaml``), in path order."""
    folders: set[Path] = set()
    for path in paths:
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"no such folder: {root}")
        for current, subfolders, _ in os.walk(root):
            here = Path(current)
            if (here / ".hydra" / "config.yaml").is_file():
                folders.add(here.resolve())
            subfolders[:] = sorted(s for s in subfolders if s not in _NOT_JOBS)
    return [read_job(folder) for folder in sorted(folders, key=_natural_key)]


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in path.parts]


def read_job(folder: Path) -> Job:
    """A job's overrides, composed config, metrics and status (see the module docstring)."""
    hydra_dir = folder / ".hydra"
    config = yaml.safe_load((hydra_dir / "config.yaml").read_text()) or {}
    overrides_file = hydra_dir / "overrides.yaml"
    overrides = [str(o) for o in (yaml.safe_load(overrides_file.read_text()) or [])] if overrides_file.is_file() else []
    job = Job(folder, overrides, config)
    metrics_file = folder / "metrics.json"
    if metrics_file.is_file():
        raw = json.loads(metrics_file.read_text())
        job.metrics = {k: float(v) for k, v in raw.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if raw.get("status"):
            job.status, job.error = "failed", f"{raw['status']}: {raw.get('error', '')}".strip(": ")
    else:
        job.status = "unfinished"
        log_text = "".join(p.read_text(errors="replace") for p in folder.glob("*.log"))
        if "run failed" in log_text:
            job.status, job.error = "failed", "failed without metrics (see its log)"
    return job


def override_key(override: str) -> str:
    """``+model.x=1`` -> ``model.x``; ``~callbacks.grid`` -> ``callbacks.grid``."""
    return override.split("=", 1)[0].lstrip("+~")


def _ignored(key: str, ignore: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in ignore)


def select(config: dict[str, Any], dotted: str) -> Any:
    """The value at ``a.b.c`` of a nested mapping, or None."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def kept_overrides(job: Job, ignore: Sequence[str]) -> set[str]:
    """The overrides of ``job`` that can make it a different experiment."""
    return {o for o in job.overrides if not _ignored(override_key(o), ignore)}


def _format(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


@dataclass
class Group:
    label: str
    jobs: list[Job]

    @property
    def finished(self) -> list[Job]:
        return [j for j in self.jobs if j.status == "finished"]

    def stats(self, metric: str) -> Stats | None:
        values = [j.metrics[metric] for j in self.finished if metric in j.metrics and math.isfinite(j.metrics[metric])]
        return describe(values) if values else None


def group_jobs(jobs: Sequence[Job], by: Sequence[str] | None = None,
               ignore: Sequence[str] = IGNORED_KEYS) -> list[Group]:
    """Jobs grouped by the ``by`` keys of their config, or by their overrides minus ``ignore``; a group is named by
    what sets it apart (overrides shared by every job are left out of the names), groups in order of first job."""
    kept = [kept_overrides(job, ignore) for job in jobs]
    common = set.intersection(*kept) if kept else set()
    groups: dict[str, Group] = {}
    for job, overrides in zip(jobs, kept):
        if by:
            label = ", ".join(f"{key}={_format(select(job.config, key))}" for key in by)
        else:
            label = ", ".join(sorted(overrides - common)) or "(all jobs)"
        groups.setdefault(label, Group(label, [])).jobs.append(job)
    return list(groups.values())


def common_overrides(jobs: Sequence[Job], ignore: Sequence[str] = IGNORED_KEYS) -> list[str]:
    """The overrides every job shares (stated once above the table)."""
    kept = [kept_overrides(job, ignore) for job in jobs]
    return sorted(set.intersection(*kept)) if kept else []


def choose_metrics(jobs: Sequence[Job], patterns: Sequence[str]) -> list[str]:
    """The metrics of finished jobs matching any of ``patterns`` (globs), sorted."""
    names = {k for j in jobs if j.status == "finished" for k in j.metrics}
    return sorted(n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns))
