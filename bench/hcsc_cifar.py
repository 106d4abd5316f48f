"""HCSC against MoCo v2 at CIFAR scale for the same CPU budget, and a randomly initialised encoder.

    python bench/hcsc_cifar.py --root ../shared/data/cifar10 --minutes 12

Runs ``train.py experiment=mocov2_cifar`` and ``experiment=hcsc_cifar`` through the real CLI on the seeded
8,000 / 2,000 split of the CIFAR-10 test set, each stopped by ``trainer.max_time``; HCSC's warm-up is shortened to
two epochs so that its prototypes act within the budget (the paper: 20 of 200 epochs). The random-init row is
``eval.py`` on the untrained model (same evaluation code). Prints kNN top-1 (k = 20 and 200), linear-probe top-1
and clustering NMI / ACC of the held-out 2,000 images. Skips cleanly when the data folder is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, run_cli, time_budget  # noqa: E402

COMMON = ["trainer=cpu", "data.num_workers=1", "callbacks.representation_eval.every_n_epochs=0"]
# CPU scale: ResNet-18 with its ImageNet stem (16x fewer FLOPs at 32 px than the CIFAR stem), so that a 12-minute
# budget holds a dozen epochs and HCSC's prototypes act for most of them. --cifar-stem restores the experiment's.
CPU_TRUNK = ["model/backbone=resnet18"]


def run(script: str, name: str, experiment: str, root: Path, out: Path, extra: list[str], reuse: bool) -> dict:
    overrides = [f"experiment={experiment}", f"data.root={root}", *COMMON, *extra]
    return run_cli(script, out / name, overrides, reuse=reuse)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--epochs", type=int, default=200, help="schedule length; max_time stops earlier")
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "bench" / "hcsc_cifar")
    parser.add_argument("--warmup", type=int, default=2, help="HCSC epochs of plain MoCo before clustering")
    parser.add_argument("--cifar-stem", action="store_true", help="the experiments' ResNet-18 CIFAR stem")
    parser.add_argument("--reuse", action="store_true", help="keep runs of --out that finished (metrics.json)")
    args = parser.parse_args()
    trunk = [] if args.cifar_stem else CPU_TRUNK
    if not (args.root / "test").is_dir():
        print(f"skipped: no CIFAR-10 ImageFolder at {args.root}")
        return
    budget = time_budget(args.minutes)
    root = args.root.resolve()
    rows = {
        "random init": run("eval.py", "random_init", "mocov2_cifar", root, args.out, ["mode=test", *trunk],
                           args.reuse),
        "MoCo v2": run("train.py", "mocov2", "mocov2_cifar", root, args.out,
                       [budget, f"trainer.max_epochs={args.epochs}", *trunk], args.reuse),
        "HCSC": run("train.py", "hcsc", "hcsc_cifar", root, args.out,
                    [budget, f"trainer.max_epochs={args.epochs}", f"model.warmup_epochs={args.warmup}", *trunk],
                    args.reuse),
    }
    stem = "CIFAR stem" if args.cifar_stem else "ImageNet stem (CPU scale)"
    print(f"CIFAR-10 (8,000 train / 2,000 held out), {args.minutes:g} min CPU each, ResNet-18 {stem}")
    print(f"{'model':12s} {'kNN@20':>8s} {'kNN@200':>8s} {'linear':>8s} {'NMI':>6s} {'ACC':>6s} {'epochs':>7s} "
          f"{'img/s':>7s}")
    for name, m in rows.items():
        trained = name != "random init"
        # Training time is the max_time budget (start-up and the final evaluation are outside it).
        rate = f"{m['steps'] * 256 / (args.minutes * 60):7.1f}" if trained else f"{'-':>7s}"
        epochs = f"{m['epochs']:7d}" if trained else f"{'-':>7s}"
        print(f"{name:12s} {m['test/knn_top1']:8.4f} {m['test/knn200_top1']:8.4f} {m['test/linear_top1']:8.4f} "
              f"{m['test/nmi']:6.3f} {m['test/acc']:6.3f} {epochs} {rate}")
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
