"""NLCL deraining quality on Rain100L for a fixed CPU budget, with and without L_LayerContra (the paper's ablation).

    python bench/nlcl_quality.py --root ../shared/data/rain100l --minutes 15

Runs ``train.py experiment=nlcl_rain100l`` twice through the real CLI (the seeded split: 28 rainy-only scenes,
28 other clean-only scenes, 4 validation and 20 held-out pairs) with a CPU-sized network (the demo's scale, stated
below), the second time with ``model.lambda_layer=0``, each stopped by ``trainer.max_time``; then prints the
held-out PSNR/SSIM of the derained output and of the rainy input (RGB and Y). Skips cleanly when the data folder
is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, run_cli, time_budget  # noqa: E402

# The demo's CPU scale of the same method (see conf/experiment/nlcl_demo.yaml).
CPU_SCALE = [
    "trainer=cpu", "data.crop_size=64", "data.batch_size=8", "data.samples_per_epoch=64", "data.num_workers=1",
    "model.generator_b.width=16", "model.generator_b.num_blocks=3", "model.generator_b.residual_output=true",
    "model.generator_b.zero_init_output=true", "model.generator_r.width=16", "model.generator_r.num_blocks=3",
    "model.generator_r.zero_init_output=true", "model.discriminator.base_channels=16", "model.num_negatives=64",
    "model.num_locations=64", "model.loc_layers=[0,1,2,3]", "model.loc_identity=false",
    "model.scheduler.decay_fraction=0.3", "model.scheduler.final_factor=0.1",
    "trainer.check_val_every_n_epoch=40", "callbacks.derain_grid.every_n_epochs=40",
    "callbacks.model_checkpoint.every_n_epochs=40",
]


def run(name: str, root: Path, minutes: float, epochs: int, out: Path, extra: list[str]) -> dict:
    return run_cli("train.py", out / name, ["experiment=nlcl_rain100l", f"data.root={root}", *CPU_SCALE,
                                            f"trainer.max_epochs={epochs}", time_budget(minutes), *extra])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data" / "rain100l")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--epochs", type=int, default=240, help="schedule length; max_time stops earlier")
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "bench" / "nlcl_quality")
    args = parser.parse_args()
    if not (args.root / "input").is_dir():
        print(f"skipped: no Rain100L pairs at {args.root}")
        return
    rows = {}
    for name, extra in (("with_layer_contra", []), ("without_layer_contra", ["model.lambda_layer=0.0"])):
        rows[name] = run(name, args.root.resolve(), args.minutes, args.epochs, args.out, extra)
    print(f"Rain100L held-out pairs (20, seeded split), {args.minutes:g} min CPU budget each; derained / rainy input")
    print(f"{'run':24s} {'PSNR':>15s} {'SSIM':>15s} {'PSNR-Y':>15s} {'SSIM-Y':>15s} {'minutes':>8s}")
    for name, m in rows.items():
        cells = [f"{m[f'test/{k}']:.{d}f} / {m[f'test/{k}_rainy']:.{d}f}" for k, d in
                 (("psnr", 2), ("ssim", 4), ("psnr_y", 2), ("ssim_y", 4))]
        print(f"{name:24s} " + " ".join(f"{c:>15s}" for c in cells) + f" {m['wall_minutes']:8.1f}")
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
