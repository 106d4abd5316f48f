"""MoCo v2 vs HCSC on CIFAR-10 against the same trunk at random init (HCSC, CVPR 2022, Sec. 4: prototypes give
the features more semantic structure). Bars: kNN top-1 (k = 20) >= random + 10 points for both; HCSC's kNN within
1 point of MoCo v2's or above; HCSC's clustering NMI above MoCo v2's; mean of the seeds."""

from __future__ import annotations

from pathlib import Path

from common import run_cli

from contrastlab.sweep_jobs import describe
from repro.shared import bar_table, cells, curve, experiment_scale, mean, plot_curves, run_header, run_row, smoke

EXPERIMENTS = {"cpu": ("mocov2_cifar_cpu", "hcsc_cifar_cpu"), "gpu": ("mocov2_cifar", "hcsc_cifar")}
TINY = ["trainer.max_epochs=2", "trainer.limit_train_batches=2", "data.global_batch_size=8", "data.batch_size=8",
        "data.num_workers=0", "model.queue_size=32", "data.eval_batch_size=16",
        "callbacks.representation_eval.every_n_epochs=1", "callbacks.representation_eval.probe_epochs=2",
        "model.backbone.widths=[8,16]", "model.projection_hidden=16", "callbacks.embedding_map.max_points=48"]
TINY_HCSC = ["model.num_clusters=[6,4,2]", "model.warmup_epochs=0", "model.kmeans_restarts=1"]
KEYS = ["test/knn_top1", "test/nmi", "test/linear_top1"]


def run(scale: str, data_root: Path, seeds: list[int], runs: Path, trainer: list[str]) -> tuple[list[str], dict]:
    moco_experiment, hcsc_experiment = EXPERIMENTS[experiment_scale(scale)]
    shared = [f"data.root={data_root / 'cifar10'}", *trainer, *smoke(scale, TINY)]
    results: dict[str, dict[int, dict]] = {"random": {}, "moco": {}, "hcsc": {}}
    for seed in seeds:
        for method, experiment in (("moco", moco_experiment), ("hcsc", hcsc_experiment)):
            extra = smoke(scale, TINY_HCSC) if method == "hcsc" else []
            folder = runs / f"{scale}_{method}_seed{seed}"
            results[method][seed] = run_cli("train.py", folder, [f"experiment={experiment}", f"seed={seed}", *shared,
                                                                 *extra], reuse=True)
            results[method][seed]["curve"] = curve(folder, "val/knn_top1")
        # The same trunk at random init, through the same evaluation code (eval.py without a checkpoint).
        random_overrides = [o for o in shared if o.startswith(("data.", "model.backbone", "trainer=", "model.proj",
                                                               "callbacks."))]
        results["random"][seed] = run_cli("eval.py", runs / f"{scale}_random_seed{seed}",
                                          [f"experiment={moco_experiment}", f"seed={seed}", *random_overrides],
                                          reuse=True)

    def average(method: str, key: str) -> float:
        return mean(results[method][s][key] for s in seeds)

    def spread(method: str, key: str) -> float:
        values = [results[method][s][key] for s in seeds]
        return describe(values).std if len(values) > 1 else 0.0

    def each(method: str, key: str) -> str:
        return cells(results[method][s][key] for s in seeds)

    knn = {m: average(m, "test/knn_top1") for m in results}
    nmi_spread = max(spread(m, "test/nmi") for m in ("moco", "hcsc"))
    nmi = {m: average(m, "test/nmi") for m in results}
    bars = [
        ("MoCo v2 kNN >= random + 10 points", f"{knn['moco']:.3f} vs {knn['random']:.3f}",
         knn["moco"] >= knn["random"] + 0.10,
         f"moco {each('moco', 'test/knn_top1')}; random {each('random', 'test/knn_top1')}"),
        ("HCSC kNN >= random + 10 points", f"{knn['hcsc']:.3f} vs {knn['random']:.3f}",
         knn["hcsc"] >= knn["random"] + 0.10, f"hcsc {each('hcsc', 'test/knn_top1')}"),
        ("HCSC kNN within 1 point of MoCo v2 or above", f"{knn['hcsc'] - knn['moco']:+.3f}",
         knn["hcsc"] >= knn["moco"] - 0.01, ""),
        ("HCSC NMI above MoCo v2's", f"{nmi['hcsc']:.3f} vs {nmi['moco']:.3f}", nmi["hcsc"] > nmi["moco"],
         f"hcsc {each('hcsc', 'test/nmi')}; moco {each('moco', 'test/nmi')}"),
        ("HCSC NMI above MoCo v2's by more than the seed std", f"{nmi['hcsc'] - nmi['moco']:+.3f} vs std "
         f"{nmi_spread:.3f}", nmi["hcsc"] - nmi["moco"] > nmi_spread, "std: the larger of the two methods' sample std"),
    ]
    lines = [f"## MoCo v2 vs HCSC on CIFAR-10 ({moco_experiment}, {hcsc_experiment}; 6,000 / 2,000 / 2,000 train / "
             "validation / test images; test figures, kNN k = 20)",
             "", *bar_table(bars), "", *run_header(KEYS)]
    lines += [run_row(m, s, results[m][s], KEYS) for m in results for s in seeds]
    series = {f"{m} seed {s}": results[m][s]["curve"] for m in ("moco", "hcsc") for s in seeds}
    plot_curves(series, runs.parent / f"{scale}_moco_hcsc.png", f"kNN top-1 on the CIFAR-10 validation split ({scale})",
                "val/knn_top1 (k = 20)", {"random init (test)": knn["random"]})
    return lines, {"knn": knn, "nmi": nmi, "passed": all(ok for _, _, ok, _ in bars)}
