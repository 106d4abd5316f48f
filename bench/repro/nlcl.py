"""NLCL on Rain100L (CVPR 2022, Sec. 4): the unsupervised decomposition derains held-out pairs, and the
LayerContra ablation (Table 4, ``model.lambda_layer=0``) beside it. Bar: held-out PSNR and PSNR-Y at least 1.0 dB
above the rainy input, for every seed."""

from __future__ import annotations

from pathlib import Path

from common import run_cli

from repro.shared import bar_table, cells, curve, experiment_scale, mean, plot_curves, run_header, run_row, smoke

EXPERIMENTS = {"cpu": "nlcl_rain100l_cpu", "gpu": "nlcl_rain100l"}
TINY = ["trainer.max_epochs=2", "data.samples_per_epoch=4", "data.batch_size=2", "data.crop_size=32",
        "data.num_workers=0", "data.splits.n_rainy=3", "data.splits.n_clean=3", "data.splits.n_test=2",
        "data.splits.n_val=2", "data.val_images=2", "data.val_crop=32", "trainer.check_val_every_n_epoch=1",
        "model.num_negatives=8", "model.num_locations=8", "model.patch_size=8", "model.search_size=16",
        "callbacks.derain_grid.size=32", "model.discriminator_warmup_epochs=1",  # 1 D-only epoch, 1 full epoch
        "callbacks.model_checkpoint.every_n_epochs=1"]
KEYS = ["test/psnr", "test/psnr_rainy", "test/psnr_y", "test/psnr_y_rainy", "test/psnr_cbcr", "test/psnr_cbcr_rainy",
        "test/colour_shift", "test/colour_shift_rainy", "test/ssim", "test/ssim_rainy"]
GAIN = 1.0


def run(scale: str, data_root: Path, seeds: list[int], runs: Path, trainer: list[str],
        ablation_seeds: list[int] | None = None) -> tuple[list[str], dict]:
    """``ablation_seeds``: the seeds of the LayerContra ablation (default: the first three of ``seeds``)."""
    experiment = EXPERIMENTS[experiment_scale(scale)]
    shared = [f"experiment={experiment}", f"data.root={data_root / 'rain100l'}", *trainer, *smoke(scale, TINY)]
    results: dict[str, dict[int, dict]] = {"nlcl": {}, "no LayerContra": {}}
    for seed in seeds:
        results["nlcl"][seed] = run_cli("train.py", runs / f"{scale}_nlcl_seed{seed}", [*shared, f"seed={seed}"],
                                        reuse=True)
    # The ablation (the paper's Table 4 row without L_LayerContra).
    ablation_seeds = [s for s in seeds if s in ablation_seeds] if ablation_seeds else seeds[:3]
    for seed in ablation_seeds:
        results["no LayerContra"][seed] = run_cli(
            "train.py", runs / f"{scale}_nlcl_nolayer_seed{seed}",
            [*shared, f"seed={seed}", "model.lambda_layer=0.0"], reuse=True)

    def gains(key: str, name: str = "nlcl", over: list[int] | None = None) -> list[float]:
        return [results[name][s][f"test/{key}"] - results[name][s][f"test/{key}_rainy"] for s in over or seeds]

    bars = [(f"held-out {name} >= rainy + {GAIN:.1f} dB, every seed", f"{mean(gains(key)):+.2f} dB (mean)",
             min(gains(key)) >= GAIN, f"gains {cells(gains(key), 2)} dB")
            for name, key in (("PSNR", "psnr"), ("PSNR-Y", "psnr_y"))]
    ablation = [f"| {label} | {cells(gains(key, 'nlcl', ablation_seeds), 2)} | "
                f"{cells(gains(key, 'no LayerContra', ablation_seeds), 2)} |"
                for label, key in (("PSNR gain (dB)", "psnr"), ("PSNR-Y gain (dB)", "psnr_y"),
                                   ("PSNR-CbCr gain (dB)", "psnr_cbcr"))]
    lines = [f"## NLCL on Rain100L ({experiment}; seeded split: 28 rainy-only, 28 clean-only, 4 validation and 20 "
             "held-out test pairs)", "", *bar_table(bars), "",
             f"LayerContra ablation (`model.lambda_layer=0`), seeds {', '.join(map(str, ablation_seeds))}: the "
             "gains over the rainy input on the test pairs.", "",
             "| metric | NLCL | without L_LayerContra |", "|---|---|---|", *ablation, "", *run_header(KEYS)]
    lines += [run_row(name, s, metrics, KEYS) for name, by_seed in results.items() for s, metrics in by_seed.items()]
    series = {f"{name} seed {s}": curve(runs / f"{scale}_nlcl{'_nolayer' if name != 'nlcl' else ''}_seed{s}",
                                        "val/psnr") for name, by_seed in results.items() for s in by_seed}
    rainy = curve(runs / f"{scale}_nlcl_seed{seeds[0]}", "val/psnr_rainy")
    plot_curves(series, runs.parent / f"{scale}_nlcl.png", f"NLCL: PSNR of the validation crops ({scale})",
                "val/psnr (dB)", {"rainy input": rainy[-1][1]} if rainy else None)
    return lines, {"psnr_gain": gains("psnr"), "psnr_y_gain": gains("psnr_y"),
                   "passed": all(ok for _, _, ok, _ in bars)}
