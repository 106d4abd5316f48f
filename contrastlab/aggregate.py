"""Seed aggregation of sweeps: one mean +- std table from the run folders of a multirun (the jobs are read and
grouped by ``contrastlab.sweep_jobs``).

    python -m contrastlab.aggregate logs/<task>/multiruns/<id>                 # group jobs that differ only in seed
    python -m contrastlab.aggregate <run folder> <run folder> ... --by model.lambda_layer --metrics 'test/psnr*'

Every folder below the given paths that holds ``.hydra/config.yaml`` is one job (plain multiruns, submitit /
SLURM sweep folders and single runs alike). A job is *finished* when its ``metrics.json`` has no ``status``; a
``status`` (diverged, failed) or a ``train.log`` that says the run failed makes it *failed*; a job without
``metrics.json`` is *unfinished* (still running, or killed). Only finished jobs enter the statistics; the others are
named in the report, so a sweep can be aggregated while it runs.

Jobs are grouped by their command-line overrides minus ``seed`` (and ``hydra.*``, ``ckpt_path``), or by the
``--by`` keys read from each job's composed config. Writes ``aggregate.md`` (per group and metric: mean, std, min,
max, n; the seeds; each job's values; failed and unfinished jobs), ``aggregate.csv`` (one row per group and metric)
and one plot per metric (``aggregate_<metric>.png``: groups on the x axis, each seed a point, mean +- std bars).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from contrastlab.sweep_jobs import (
    IGNORED_KEYS,
    Group,
    Job,
    choose_metrics,
    common_overrides,
    find_jobs,
    group_jobs,
)


def markdown(groups: Sequence[Group], metrics: Sequence[str], root: Path | None = None,
             common: Sequence[str] = ()) -> str:
    """The report: a mean +- std table, the full statistics, every job's values, jobs left out."""
    def where(job: Job) -> str:
        try:
            return str(job.folder.relative_to(root)) if root else str(job.folder)
        except ValueError:
            return str(job.folder)

    def row(cells: Iterable[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    lines = ["# Aggregate", "", "Mean ± sample std over the finished jobs of each group (n = seeds)."]
    if common:
        lines += ["", "Every job: " + " ".join(f"`{o}`" for o in common)]
    lines += ["", row(["group", "n", "seeds", *metrics]), row(["---"] * (len(metrics) + 3))]
    for group in groups:
        seeds = ", ".join(str(j.seed) for j in group.finished)
        cells = [s.text() if (s := group.stats(m)) else "-" for m in metrics]
        lines.append(row([group.label, str(len(group.finished)), seeds, *cells]))
    lines += ["", "## Statistics", "", row(["group", "metric", "n", "mean", "std", "min", "max"]), row(["---"] * 7)]
    for group in groups:
        for metric in metrics:
            if (s := group.stats(metric)) is not None:
                lines.append(f"| {group.label} | {metric} | {s.n} | {s.mean:.4f} | {s.std:.4f} | {s.min:.4f} | "
                             f"{s.max:.4f} |")
    lines += ["", "## Jobs", "", row(["group", "seed", *metrics, "folder"]), row(["---"] * (len(metrics) + 3))]
    for group in groups:
        for job in group.finished:
            values = [f"{job.metrics[m]:.4f}" if m in job.metrics else "-" for m in metrics]
            lines.append(row([group.label, str(job.seed), *values, where(job)]))
    left_out = [(g.label, j) for g in groups for j in g.jobs if j.status != "finished"]
    if left_out:
        lines += ["", "## Not in the statistics", ""]
        lines += [f"- {job.status}: {where(job)} ({label}, seed {job.seed}){': ' + job.error if job.error else ''}"
                  for label, job in left_out]
    return "\n".join(lines) + "\n"


def write_csv(groups: Sequence[Group], metrics: Sequence[str], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "metric", "n", "mean", "std", "min", "max", "seeds", "failed", "unfinished"])
        for group in groups:
            failed = ";".join(str(j.folder) for j in group.jobs if j.status == "failed")
            unfinished = ";".join(str(j.folder) for j in group.jobs if j.status == "unfinished")
            for metric in metrics:
                if (s := group.stats(metric)) is not None:
                    seeds = ";".join(str(j.seed) for j in group.finished if metric in j.metrics)
                    writer.writerow([group.label, metric, s.n, s.mean, s.std, s.min, s.max, seeds, failed, unfinished])


def plot_metric(groups: Sequence[Group], metric: str, path: Path) -> Path:
    """Groups on the x axis, each finished job a point (labelled by seed), mean +- std as a bar with error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [g for g in groups if g.stats(metric) is not None]
    figure, axis = plt.subplots(figsize=(max(4.0, 1.3 * len(shown) + 2), 3.8))
    for position, group in enumerate(shown):
        stats = group.stats(metric)
        assert stats is not None
        axis.errorbar(position, stats.mean, yerr=0 if stats.n < 2 else stats.std, fmt="_", markersize=22,
                      capsize=6, color="black", zorder=2)
        jobs = [j for j in group.finished if metric in j.metrics]
        offsets = [0.0] if len(jobs) == 1 else [(i / (len(jobs) - 1) - 0.5) * 0.3 for i in range(len(jobs))]
        for offset, job in zip(offsets, jobs):
            axis.scatter(position + offset, job.metrics[metric], s=22, zorder=3)
            axis.annotate(str(job.seed), (position + offset, job.metrics[metric]), fontsize=7,
                          textcoords="offset points", xytext=(3, 3))
    axis.set_xticks(range(len(shown)), [g.label for g in shown], rotation=20 if len(shown) > 3 else 0, ha="right"
                    if len(shown) > 3 else "center", fontsize=8)
    axis.set_ylabel(metric)
    axis.set_title(f"{metric}: seeds (points, labelled) and mean ± std", fontsize=9)
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def aggregate(paths: Sequence[str | Path], out: Path, by: Sequence[str] | None = None,
              metric_patterns: Sequence[str] = ("test/*",), ignore: Sequence[str] = IGNORED_KEYS,
              plot: bool = True) -> tuple[list[Group], list[str]]:
    """Find, group and summarise the jobs under ``paths``; write the report files into ``out``."""
    jobs = find_jobs(paths)
    if not jobs:
        raise FileNotFoundError(f"no run folders (with .hydra/config.yaml) under {', '.join(map(str, paths))}")
    groups = group_jobs(jobs, by, ignore)
    metrics = choose_metrics(jobs, metric_patterns)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(paths[0]).resolve() if len(paths) == 1 else None
    (out / "aggregate.md").write_text(markdown(groups, metrics, root, common_overrides(jobs, ignore)))
    write_csv(groups, metrics, out / "aggregate.csv")
    if plot:
        for metric in metrics:
            plot_metric(groups, metric, out / f"aggregate_{metric.replace('/', '_')}.png")
    return groups, metrics


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contrastlab.aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="a multirun folder, or run folders")
    parser.add_argument("--by", nargs="+", default=None, help="group by these config keys (default: every override "
                        "but the seed)")
    parser.add_argument("--metrics", nargs="+", default=["test/*"], help="metric names or globs (default: test/*)")
    parser.add_argument("--ignore", nargs="+", default=[], help="more override keys (globs) that do not split groups")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: the single path given, "
                        "else the current folder)")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    out = args.out or (Path(args.paths[0]) if len(args.paths) == 1 else Path.cwd())
    try:
        groups, metrics = aggregate(args.paths, out, args.by, args.metrics, (*IGNORED_KEYS, *args.ignore),
                                    not args.no_plots)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print((out / "aggregate.md").read_text())
    print(f"report: {out / 'aggregate.md'} (and aggregate.csv" + (", one plot per metric)" if not args.no_plots
                                                                   else ")"))
    if not metrics:
        print(f"no finished job has a metric matching {' '.join(args.metrics)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
