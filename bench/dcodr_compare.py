"""Contrastive vs DCoDR-norec vs DCoDR on shapes and Cars3D for a fixed CPU budget each.

    python bench/dcodr_compare.py --cars3d ../shared/data/cars3d --minutes 5

Runs the six experiments through the real CLI (``{contrastive,dcodr_norec,dcodr}_{shapes,cars3d}``), each stopped
by ``trainer.max_time``, Cars3D at CPU scale (the shapes experiments' small CNN encoder and 64-channel generator,
pixel-L1 reconstruction, 32 px; the paper: ResNet-50, 64 px, VGG perceptual loss), and prints the held-out domain
accuracy against chance (lower = more invariant), the content-factor accuracies (MLP probe, higher = more
informative), 1-NN retrieval and training steps/s. Cars3D is skipped when its folder is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, run_cli, time_budget  # noqa: E402

VARIANTS = ("contrastive", "dcodr_norec", "dcodr")
CPU_CARS3D = ["model/backbone@model.encoder.backbone=conv", "model.encoder.hidden_dim=null", "data.source.size=32",
              "trainer=cpu"]
GENERATOR_CPU = ["model.generator.channels=64", "model.reconstruction.perceptual=false"]


def run(experiment: str, minutes: float, out: Path, extra: list[str], reuse: bool) -> dict:
    metrics = run_cli("train.py", out / experiment, [
        f"experiment={experiment}", time_budget(minutes), "trainer.max_epochs=1000", "data.num_workers=1",
        "callbacks.disentanglement.mlp_epochs=30", *extra], reuse=reuse)
    metrics["steps_per_second"] = metrics["steps"] / (minutes * 60)
    return metrics


def table(name: str, results: dict[str, dict], factors: list[str]) -> None:
    print(f"\n{name}: held-out images; domain accuracy (chance {results['dcodr']['test/domain_chance']:.4f}), "
          "content accuracy by MLP probe, 1-NN retrieval")
    header = f"{'variant':12s} {'domain':>7s} " + " ".join(f"{f[:11]:>11s}" for f in factors)
    print(header + f" {'retr.dom':>8s} " + " ".join(f"{'r.' + f[:9]:>11s}" for f in factors) + f" {'steps/s':>8s}")
    for variant, m in results.items():
        cells = " ".join(f"{m[f'test/{f}_acc']:11.4f}" for f in factors)
        retrieval = " ".join(f"{m[f'test/retrieval_{f}_top1']:11.4f}" for f in factors)
        print(f"{variant:12s} {m['test/domain_acc']:7.4f} {cells} {m['test/retrieval_domain_top1']:8.4f} {retrieval} "
              f"{m['steps_per_second']:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cars3d", type=Path, default=ROOT.parent / "shared" / "data" / "cars3d")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "bench" / "dcodr_compare")
    parser.add_argument("--reuse", action="store_true", help="keep runs of --out that finished (metrics.json)")
    args = parser.parse_args()
    shapes = {v: run(f"{v}_shapes", args.minutes, args.out, GENERATOR_CPU if v == "dcodr" else [], args.reuse)
              for v in VARIANTS}
    table("shapes (4 shapes x 1,000, 32 px)", shapes, ["wall_hue", "floor_hue", "object_hue", "scale", "orientation"])
    summary = {"shapes": shapes}
    if (args.cars3d / "cars").is_dir() or list(args.cars3d.glob("*.mat")):
        root = f"data.source.root={args.cars3d.resolve()}"
        cars = {v: run(f"{v}_cars3d", args.minutes, args.out,
                       [root, *CPU_CARS3D, *(GENERATOR_CPU if v == "dcodr" else [])], args.reuse)
                for v in VARIANTS}
        table("Cars3D (183 cars, CPU scale: 32 px, small CNN)", cars, ["content", "azimuth", "elevation"])
        summary["cars3d"] = cars
    else:
        print(f"\nCars3D skipped: no data at {args.cars3d}")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
