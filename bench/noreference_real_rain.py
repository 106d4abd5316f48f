"""NIQE / BRISQUE (pyiqa, MATLAB-calibrated) of the 100 real rainy photographs and of the released NLCL weights'
outputs on them, through the same command a user runs:

    python bench/noreference_real_rain.py [--data ../shared/data] [--params <folder with the .mat files>]

It runs ``eval.py experiment=nlcl_official mode=predict`` on ``<data>/real_rain/rainy`` with
``callbacks.noreference.required=true`` and prints ``predict/niqe`` / ``predict/brisque`` for the rainy input and the
output. It skips cleanly (exit 0, one line) when pyiqa, the data or the parameter files (niqe_matlab_params.mat,
brisque_matlab.mat: pyiqa's cache or ``--params``) are missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("niqe_matlab_params.mat", "brisque_matlab.mat")


def parameters_present(params: Path | None) -> bool:
    from pyiqa.utils.download_util import DEFAULT_CACHE_DIR

    return all((Path(DEFAULT_CACHE_DIR) / f).is_file() or (params is not None and (params / f).is_file())
               for f in FILES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--params", type=Path, default=None)
    args = parser.parse_args()
    rainy, weights = args.data / "real_rain" / "rainy", args.data / "nlcl_official" / "checkpoint"
    if importlib.util.find_spec("pyiqa") is None:
        print("skipped: pyiqa is not installed (pip install -e '.[iqa]')")
        return 0
    if not rainy.is_dir() or not weights.is_dir():
        print(f"skipped: '{rainy}' or '{weights}' does not exist")
        return 0
    if not parameters_present(args.params):
        print(f"skipped: {' / '.join(FILES)} are neither in pyiqa's cache nor in --params")
        return 0
    with tempfile.TemporaryDirectory() as run:
        command = [sys.executable, "eval.py", "experiment=nlcl_official", "mode=predict", f"data.predict_dir={rainy}",
                   f"model.pretrained_b={weights / 'latest_net_Back.pth'}",
                   f"model.pretrained_r={weights / 'latest_net_Rain.pth'}", "callbacks.noreference.required=true",
                   f"hydra.run.dir={run}"]
        if args.params is not None:
            command.append(f"callbacks.noreference.params_dir={args.params}")
        subprocess.run(command, cwd=ROOT, check=True)
        metrics = json.loads((Path(run) / "metrics.json").read_text())
    print(f"{int(metrics['predict/images'])} real rainy photographs (lower is better):")
    for name in ("niqe", "brisque"):
        print(f"  {name.upper()}: rainy {metrics[f'predict/{name}_rainy']:.3f} -> NLCL (released weights) "
              f"{metrics[f'predict/{name}']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
