"""Regenerate the evidence that each method learns what its paper claims, through the real CLI.

    python bench/reproduce.py --scale cpu                     # 2 CPU cores, every protocol; finished runs are kept
    python bench/reproduce.py --scale cpu --only nlcl --nlcl-seeds 42
    python bench/reproduce.py --scale gpu                     # the experiments' own schedules, one GPU
    python bench/reproduce.py --scale tiny --data-root <dir>  # seconds, synthetic data (the test suite)
    python bench/reproduce.py --scale gpu_tiny --data-root <dir>  # the gpu scale's experiments at toy sizes, CPU

``--data-root`` holds ``cifar10/``, ``rain100l/`` and ``cars3d/`` as ../shared/data does. Writes
``<out>/<scale>.md`` (a table per method: bar, measured, pass/fail, seeds, wall time, steps), ``<out>/<scale>.json``
and one comparison plot per method (``<out>/<scale>_<protocol>.png``: kNN / PSNR / domain accuracy against the
optimiser step). The run folders live in ``<out>/runs/<scale>_<run>_seed<n>``; a run that finished (it has a
``metrics.json``) is reused, so an interrupted call continues where it stopped. Protocols: ``moco_hcsc``
(MoCo v2 vs HCSC vs random init on CIFAR-10), ``nlcl`` (Rain100L, with the LayerContra ablation), ``dcodr``
(DCoDR / DCoDR-norec / contrastive on Cars3D at equal steps and equal wall time).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT  # noqa: E402
from repro import dcodr, moco_hcsc, nlcl  # noqa: E402

PROTOCOLS = {"moco_hcsc": moco_hcsc, "nlcl": nlcl, "dcodr": dcodr}
TRAINER = {"cpu": ["trainer=cpu"], "gpu": ["trainer=gpu"], "tiny": ["trainer=cpu"], "gpu_tiny": ["trainer=cpu"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(TRAINER), default="cpu")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data",
                        help="folder with cifar10/, rain100l/, cars3d/")
    parser.add_argument("--only", nargs="+", choices=sorted(PROTOCOLS), default=list(PROTOCOLS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2],
                        help="the default seed (42) and two others: every bar is judged on at least 3")
    parser.add_argument("--nlcl-seeds", type=int, nargs="+", default=[42, 1, 2, 3, 4],
                        help="NLCL is judged on 5 seeds (its LayerContra ablation on the first 3)")
    parser.add_argument("--nlcl-ablation-seeds", type=int, nargs="+", default=None,
                        help="the LayerContra ablation's seeds (default: the first 3 NLCL seeds)")
    parser.add_argument("--dcodr-seeds", type=int, nargs="+", default=None, help="default: --seeds")
    parser.add_argument("--dcodr-equal-steps-only", action="store_true", help="skip the equal-wall-time runs")
    parser.add_argument("--dcodr-wall-seeds", type=int, nargs="+", default=None,
                        help="run the equal-wall-time comparison on these of the DCoDR seeds only (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--override", nargs="+", default=[],
                        help="Hydra overrides added to every run, e.g. trainer.max_time=null on a shared machine")
    args = parser.parse_args()
    runs = args.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    summary_path = args.out / f"{args.scale}.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary = {k: v for k, v in summary.items() if k in PROTOCOLS}
    for name in args.only:
        seeds = {"dcodr": args.dcodr_seeds, "nlcl": args.nlcl_seeds}.get(name) or args.seeds
        options = {"dcodr": {"wall_time": not args.dcodr_equal_steps_only, "wall_seeds": args.dcodr_wall_seeds},
                   "nlcl": {"ablation_seeds": args.nlcl_ablation_seeds}}.get(name, {})
        lines, result = PROTOCOLS[name].run(args.scale, args.data_root.resolve(), seeds, runs,
                                            [*TRAINER[args.scale], *args.override],
                                            **options)
        summary[name] = {**result, "seeds": seeds, "lines": lines}
        summary_path.write_text(json.dumps(summary, indent=2))
    seeds_used = "; ".join(f"{k}: {v.get('seeds')}" for k, v in summary.items())
    header = [f"# Reproductions at `{args.scale}` scale", "",
              f"`python bench/reproduce.py {' '.join(sys.argv[1:])}` (seeds {seeds_used}); every figure is a test "
              "metric of the run's final weights, or of its best validation checkpoint where the experiment sets "
              "`test_ckpt: best` (NLCL); wall minutes include start-up and evaluation.", ""]
    body = [line for name in PROTOCOLS if name in summary for line in [*summary[name]["lines"], ""]]
    body += [f"## {name}: not measured at this scale in this file (`--only {name}`)\n" for name in PROTOCOLS
             if name not in summary]
    (args.out / f"{args.scale}.md").write_text("\n".join(header + body))
    summary_path.write_text(json.dumps(summary, indent=2))
    print((args.out / f"{args.scale}.md").read_text())


if __name__ == "__main__":
    main()
