"""DCoDR on Cars3D (ECCV 2022, Sec. 4 / Table 2): negatives only from the same domain make the content code
invariant to the domain (the car) while keeping the content (the pose). DCoDR and DCoDR-norec against the
standard contrastive baseline, at equal optimiser steps and at equal wall time. Bar: domain accuracy of both
DCoDR variants at most 0.6x the baseline's, content accuracy not lower by more than 2 points."""

from __future__ import annotations

from pathlib import Path

from common import run_cli, time_budget

from repro.shared import (
    SMOKE_SCALES,
    bar_table,
    cells,
    curve,
    experiment_scale,
    mean,
    plot_curves,
    run_header,
    run_row,
    smoke,
)

EXPERIMENTS = {"cpu": "{}_cars3d_cpu", "gpu": "{}_cars3d"}
VARIANTS = ("contrastive", "dcodr_norec", "dcodr")
TINY = ["trainer.max_epochs=2", "data.batches_per_epoch=2", "data.domains_per_batch=2", "data.per_domain=4",
        "data.source.size=16", "model.generator.channels=8", "model.generator.head_channels=8",
        "model.encoder.backbone.widths=[8,16]", "callbacks.disentanglement.mlp_epochs=2",
        "callbacks.disentanglement.linear_epochs=2", "callbacks.disentanglement.every_n_epochs=2",
        "data.num_workers=0", "callbacks.embedding_map.max_points=48"]
KEYS = ["test/domain_acc", "test/content_acc", "test/azimuth_acc", "test/elevation_acc", "test/domain_linear_acc"]
RATIO, CONTENT_DROP = 0.6, 0.02


def _overrides(variant: str, scale: str) -> list[str]:
    tiny = smoke(scale, TINY)
    if variant != "dcodr":  # no generator to size
        tiny = [o for o in tiny if not o.startswith("model.generator")]
    return tiny


def run(scale: str, data_root: Path, seeds: list[int], runs: Path, trainer: list[str],
        wall_time: bool = True, wall_seeds: list[int] | None = None) -> tuple[list[str], dict]:
    """``wall_time=False`` runs the equal-steps comparison only (the equal-wall-time rows say so); ``wall_seeds``
    (default: all) runs the equal-wall-time comparison on those of ``seeds`` only."""
    wall_seeds = [s for s in seeds if s in (wall_seeds or seeds)] if wall_time else []
    experiment = EXPERIMENTS[experiment_scale(scale)]
    shared = [f"data.source.root={data_root / 'cars3d'}", *trainer]
    if scale in SMOKE_SCALES:  # keep the resized-array cache beside the runs, not in the user's cache folder
        shared.append(f"data.source.cache_dir={runs / 'cars3d_cache'}")
    steps: dict[str, dict[int, dict]] = {v: {} for v in VARIANTS}
    wall: dict[str, dict[int, dict]] = {v: {} for v in VARIANTS if v != "dcodr"}
    for seed in seeds:
        for variant in VARIANTS:
            steps[variant][seed] = run_cli("train.py", runs / f"{scale}_{variant}_seed{seed}", [
                f"experiment={experiment.format(variant)}", f"seed={seed}", *shared,
                *_overrides(variant, scale)], reuse=True)
        # Equal wall time: the two variants without a generator train as long as DCoDR's fit took.
        if seed not in wall_seeds:
            continue
        budget = time_budget(max(steps["dcodr"][seed]["time/fit_minutes"], 1 / 60))
        for variant in wall:
            wall[variant][seed] = run_cli("train.py", runs / f"{scale}_{variant}_walltime_seed{seed}", [
                f"experiment={experiment.format(variant)}", f"seed={seed}", *shared,
                *_overrides(variant, scale), budget, *([] if scale in SMOKE_SCALES else ["trainer.max_epochs=1000"])],
                reuse=True)

    def average(table: dict, variant: str, key: str, over: list[int]) -> float:
        return mean(table[variant][s][key] for s in over)

    bars = []
    comparisons = [("equal steps", steps, seeds)] + ([("equal wall time", wall, wall_seeds)] if wall_time else [])
    for label, table, over in comparisons:
        base_domain = average(table, "contrastive", "test/domain_acc", over)
        base_content = average(table, "contrastive", "test/content_acc", over)
        for variant in ("dcodr_norec", "dcodr"):
            source = steps if variant == "dcodr" else table  # DCoDR's own run sets the wall time
            domain = average(source, variant, "test/domain_acc", over)
            content = average(source, variant, "test/content_acc", over)
            bars.append((f"{label}: {variant} domain acc <= {RATIO}x contrastive",
                         f"{domain:.3f} vs {base_domain:.3f} ({domain / base_domain:.2f}x)",
                         domain <= RATIO * base_domain, cells(source[variant][s]["test/domain_acc"] for s in over)))
            bars.append((f"{label}: {variant} content acc >= contrastive - {CONTENT_DROP * 100:.0f} points",
                         f"{content:.3f} vs {base_content:.3f}", content >= base_content - CONTENT_DROP,
                         cells(source[variant][s]["test/content_acc"] for s in over)))
    chance = steps["dcodr"][seeds[0]].get("test/domain_chance", float("nan"))
    lines = [f"## DCoDR vs DCoDR-norec vs contrastive on Cars3D ({experiment.format('*')}; held-out 10 % of "
             f"every car; MLP probes; domain chance {chance:.4f})", "",
             "Equal wall time: the variants without a generator train for DCoDR's fit time (DCoDR itself is the "
             f"equal-steps run); seeds {', '.join(map(str, wall_seeds)) or 'none'}.", "",
             *bar_table(bars), "", *run_header(KEYS)]
    lines += [run_row(v, s, steps[v][s], KEYS) for v in VARIANTS for s in seeds]
    lines += [run_row(f"{v} (equal wall time)", s, wall[v][s], KEYS) for v in wall for s in wall[v]]
    if not wall_time:
        lines += ["", "Equal wall time: not run in this call (`--dcodr-equal-steps-only`)."]
    series = {f"{v} seed {s}": curve(runs / f"{scale}_{v}_seed{s}", "val/domain_acc") for v in VARIANTS for s in seeds}
    series |= {f"{v} equal wall time seed {s}": curve(runs / f"{scale}_{v}_walltime_seed{s}", "val/domain_acc")
               for v in wall for s in wall[v]}
    plot_curves(series, runs.parent / f"{scale}_dcodr.png", f"Domain accuracy of the content code ({scale}; lower "
                "= more invariant)", "val/domain_acc (MLP probe)", {"chance": chance})
    return lines, {"passed": all(ok for _, _, ok, _ in bars)}
