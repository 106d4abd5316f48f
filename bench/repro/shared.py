"""What the reproduction protocols share: learning curves from a run's CSV log, the comparison plot, table cells."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from contrastlab.sweep_jobs import describe

# Smoke scale -> the scale whose experiments it runs, at toy sizes, in seconds on the CPU.
SMOKE_SCALES = {"tiny": "cpu", "gpu_tiny": "gpu"}


def experiment_scale(scale: str) -> str:
    """The scale whose experiments ``scale`` runs: itself, or for a smoke scale the one it shrinks."""
    return SMOKE_SCALES.get(scale, scale)


def smoke(scale: str, overrides: list[str]) -> list[str]:
    """The toy-size ``overrides`` a smoke scale adds (none at a real scale). Shrinking the gpu scale, the experiments
    keep their own ResNet trunks, so the small conv trunk's ``widths`` are dropped."""
    if scale not in SMOKE_SCALES:
        return []
    return [o for o in overrides if not (experiment_scale(scale) == "gpu" and ".backbone.widths=" in o)]


def curve(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every logged ``key`` in ``<run_dir>/csv/metrics.csv`` (empty when never logged)."""
    log = run_dir / "csv" / "metrics.csv"
    if not log.exists():
        return []
    rows = [r for r in csv.DictReader(log.open()) if r.get(key)]
    return sorted((int(float(r["step"])), float(r[key])) for r in rows)


def mean(values: Iterable[float]) -> float:
    """The seeds' mean, by the code of ``python -m contrastlab.aggregate`` (``sweep_jobs.describe``)."""
    return describe(values).mean


def cells(values: Iterable[float], digits: int = 3) -> str:
    """Each seed's value, then mean ± sample std and the minimum over the seeds (``contrastlab.aggregate``)."""
    values = list(values)
    each = ", ".join(f"{v:.{digits}f}" for v in values)
    if len(values) < 2:
        return each
    stats = describe(values)
    return f"{each} (mean {stats.text(digits)}, min {stats.min:.{digits}f})"


def bar_table(bars: list[tuple[str, str, bool, str]]) -> list[str]:
    """Markdown rows: bar, measured, pass/FAIL, per-seed detail."""
    lines = ["| bar | measured | pass | per seed |", "|---|---|---|---|"]
    return lines + [f"| {name} | {value} | {'pass' if ok else 'FAIL'} | {detail} |" for name, value, ok, detail in bars]


def plot_curves(series: dict[str, list[tuple[int, float]]], path: Path, title: str, ylabel: str,
                levels: dict[str, float] | None = None) -> None:
    """One line per labelled run (value against the optimiser step) plus dashed reference levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for label, value in (levels or {}).items():
        axis.axhline(value, linestyle="--", color="grey", linewidth=1)
        axis.text(0.01, value, label, transform=axis.get_yaxis_transform(), fontsize=7, color="grey", va="bottom")
    for label, points in series.items():
        if points:
            steps, values = zip(*points)
            axis.plot(steps, values, marker="o", markersize=3, label=label)
    axis.set_xlabel("optimiser step")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_row(name: str, seed: int, metrics: dict, keys: list[str]) -> str:
    """A table row: run, seed, the metrics ``keys``, wall minutes, steps."""
    values = " | ".join(f"{metrics.get(k, float('nan')):.3f}" for k in keys)
    return f"| {name} | {seed} | {values} | {metrics.get('wall_minutes', 0):.1f} | {metrics.get('steps', 0)} |"


def run_header(keys: list[str]) -> list[str]:
    return ["| run | seed | " + " | ".join(keys) + " | wall min | steps |", "|---" * (len(keys) + 4) + "|"]
