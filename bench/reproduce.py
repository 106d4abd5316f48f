"""Regenerate the evidence that each method learns what its paper claims, through the real CLI.

    python bench/reproduce.py --scale cpu                    # 2 CPU cores; finished runs are kept (resumable)
    python bench/reproduce.py --scale cpu --seeds 1          # one seed
    python bench/reproduce.py --scale gpu                    # the experiments' own schedules, one GPU
    python bench/reproduce.py --scale tiny --data <folder>   # seconds, synthetic data (the test suite)

Writes ``<out>/<scale>.md`` (a table per method: bar, measured, pass/fail, seeds, wall time, steps) and one
comparison plot per method (``<out>/<scale>_<method>.png``, e.g. kNN against the step for random init / MoCo v2 /
HCSC). Protocols so far: MoCo v2 vs HCSC on CIFAR-10 against the same trunk at random init. NLCL and DCoDR
CPU protocols are not defined here yet (see the issue tracker).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, run_cli  # noqa: E402

SCALES = {
    "cpu": {"moco": "mocov2_cifar_cpu", "hcsc": "hcsc_cifar_cpu", "extra": ["trainer=cpu"]},
    "gpu": {"moco": "mocov2_cifar", "hcsc": "hcsc_cifar", "extra": ["trainer=gpu"]},
    "tiny": {"moco": "mocov2_cifar_cpu", "hcsc": "hcsc_cifar_cpu",
             "extra": ["trainer.max_epochs=2", "trainer.limit_train_batches=2", "data.global_batch_size=8",
                       "data.batch_size=8", "data.num_workers=0", "model.queue_size=32", "data.eval_batch_size=16",
                       "model.num_clusters=[6,4,2]", "model.warmup_epochs=0", "model.kmeans_restarts=1",
                       "callbacks.representation_eval.every_n_epochs=1", "callbacks.representation_eval.probe_epochs=2",
                       "model.backbone.widths=[8,16]", "model.projection_hidden=16"]},
}


def knn_curve(run_dir: Path) -> list[tuple[int, float]]:
    log = run_dir / "csv" / "metrics.csv"
    if not log.exists():
        return []
    rows = [r for r in csv.DictReader(log.open()) if r.get("val/knn_top1")]
    return sorted((int(float(r["step"])), float(r["val/knn_top1"])) for r in rows)


def moco_hcsc(scale: str, data: Path, seeds: list[int], out: Path) -> tuple[list[str], dict]:
    setting = SCALES[scale]
    extra = [f"data.root={data}", *setting["extra"]]
    runs: dict[str, dict[int, dict]] = {"random": {}, "moco": {}, "hcsc": {}}
    for seed in seeds:
        for method in ("moco", "hcsc"):
            overrides = [f"experiment={setting[method]}", f"seed={seed}", *extra]
            if method == "moco":
                overrides = [o for o in overrides if not o.startswith(("model.num_clusters", "model.warmup_epochs",
                                                                        "model.kmeans_restarts"))]
            runs[method][seed] = run_cli("train.py", out / f"{scale}_{method}_seed{seed}", overrides, reuse=True)
            runs[method][seed]["curve"] = knn_curve(out / f"{scale}_{method}_seed{seed}")
        # The same trunk at random init, through the same evaluation code (eval.py, no checkpoint).
        random_overrides = [f"experiment={setting['moco']}", f"seed={seed}",
                            *[o for o in extra if o.startswith(("data.", "model.backbone", "trainer=",
                                                                "model.projection", "callbacks."))]]
        runs["random"][seed] = run_cli("eval.py", out / f"{scale}_random_seed{seed}", random_overrides, reuse=True)

    def mean(method: str, key: str) -> float:
        return statistics.mean(runs[method][s][key] for s in seeds)

    def each(method: str, key: str) -> str:
        return ", ".join(f"{runs[method][s][key]:.3f}" for s in seeds)

    knn = {m: mean(m, "test/knn_top1") for m in runs}
    nmi = {m: mean(m, "test/nmi") for m in runs}
    bars = [
        ("MoCo v2 kNN >= random + 10 points", f"{knn['moco']:.3f} vs {knn['random']:.3f}",
         knn["moco"] >= knn["random"] + 0.10, f"moco {each('moco', 'test/knn_top1')}; random "
                                              f"{each('random', 'test/knn_top1')}"),
        ("HCSC kNN >= random + 10 points", f"{knn['hcsc']:.3f} vs {knn['random']:.3f}",
         knn["hcsc"] >= knn["random"] + 0.10, f"hcsc {each('hcsc', 'test/knn_top1')}"),
        ("HCSC kNN within 1 point of MoCo v2 or above", f"{knn['hcsc'] - knn['moco']:+.3f}",
         knn["hcsc"] >= knn["moco"] - 0.01, ""),
        ("HCSC NMI above MoCo v2's", f"{nmi['hcsc']:.3f} vs {nmi['moco']:.3f}", nmi["hcsc"] > nmi["moco"],
         f"hcsc {each('hcsc', 'test/nmi')}; moco {each('moco', 'test/nmi')}"),
    ]
    lines = ["## MoCo v2 vs HCSC on CIFAR-10 (held-out 2,000 images, kNN k = 20)", "",
             "| bar | measured (mean of seeds) | pass | per seed |", "|---|---|---|---|"]
    lines += [f"| {name} | {value} | {'pass' if ok else 'FAIL'} | {detail} |" for name, value, ok, detail in bars]
    lines += ["", "| run | seed | test/knn_top1 | test/nmi | test/linear_top1 | wall min | steps |",
              "|---|---|---|---|---|---|---|"]
    for method in ("random", "moco", "hcsc"):
        for seed in seeds:
            r = runs[method][seed]
            lines.append(f"| {method} | {seed} | {r['test/knn_top1']:.3f} | {r.get('test/nmi', float('nan')):.3f} | "
                         f"{r.get('test/linear_top1', float('nan')):.3f} | {r.get('wall_minutes', 0):.1f} | "
                         f"{r.get('steps', 0)} |")
    plot_curves(runs, knn["random"], out / f"{scale}_moco_hcsc.png", f"kNN top-1 on held-out CIFAR-10 ({scale})")
    return lines, {"knn": knn, "nmi": nmi, "passed": all(ok for _, _, ok, _ in bars)}


def plot_curves(runs: dict, random_level: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    axis.axhline(random_level, color="grey", linestyle="--", label="random init (test)")
    for method, colour in (("moco", "tab:blue"), ("hcsc", "tab:orange")):
        for seed, run in runs[method].items():
            if run["curve"]:
                steps, values = zip(*run["curve"])
                axis.plot(steps, values, color=colour, marker="o", markersize=3, label=f"{method} seed {seed}")
    axis.set_xlabel("optimiser step")
    axis.set_ylabel("val/knn_top1 (k = 20)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs_dir = args.out / "runs"
    runs_dir.mkdir(exist_ok=True)
    lines, summary = moco_hcsc(args.scale, args.data.resolve(), args.seeds, runs_dir)
    header = [f"# Reproductions at `{args.scale}` scale", "",
              f"`python bench/reproduce.py --scale {args.scale} --seeds {' '.join(map(str, args.seeds))}`", ""]
    (args.out / f"{args.scale}.md").write_text("\n".join(header + lines) + "\n")
    (args.out / f"{args.scale}.json").write_text(json.dumps(summary, indent=2))
    (runs_dir / f"{args.scale}_moco_hcsc.png").rename(args.out / f"{args.scale}_moco_hcsc.png")
    print((args.out / f"{args.scale}.md").read_text())


if __name__ == "__main__":
    main()
