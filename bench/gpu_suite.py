"""Every speed goal in one call: `python bench/gpu_suite.py <out folder>` (one H200: at most 8 minutes).

Each section runs in its own subprocess under its own time limit, so one slow or failing section cannot sink the
rest; each compares against its plain-PyTorch reference *in the same run* (warm-up excluded, CUDA-synchronised).
Writes ``<out>/gpu_suite.json`` and ``<out>/gpu_suite.md``. ``--smoke`` runs every section at tiny sizes on the
CPU in seconds (the test suite does, so the script cannot rot).

    python bench/gpu_suite.py /tmp/suite                  # the full suite on a GPU
    python bench/gpu_suite.py /tmp/suite --smoke          # tiny, CPU
    python bench/gpu_suite.py /tmp/suite --only kmeans    # one section
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_sections  # noqa: E402

# section -> (seconds allowed on the GPU, goal text)
SECTIONS = {
    "moco_hcsc": (150, "HCSC and MoCo v2 modules >= 0.95x the plain MoCo v2 step (ResNet-50, 224 px, batch 256)"),
    "nlcl": (75, "NLCL module >= 40 images/s (official architecture, 256 px, batch 32, bf16)"),
    "kmeans": (60, "hierarchical k-means 1,281,167 x 128 -> 3000/2000/1000, 20 iterations < 1 s per epoch"),
    "dcodr": (60, "DCoDR step at 64 px, ResNet-50 + generator, bf16: steps/s and ratio to a plain loop"),
    "jpeg": (120, "HCSC from JPEG files >= 0.8x the synthetic-input rate (16 loader workers)"),
}


def run_section(name: str, out: Path, smoke: bool, limit: float | None) -> dict:
    result_file = out / f"{name}.json"
    result_file.unlink(missing_ok=True)
    command = [sys.executable, str(Path(gpu_sections.__file__)), name, str(result_file)]
    command += ["--smoke"] if smoke else []
    start = time.time()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit)
        status = "ok" if done.returncode == 0 and result_file.exists() else f"failed: {done.stderr.strip()[-600:]}"
    except subprocess.TimeoutExpired:
        status = f"timed out after {limit:.0f} s"  # only with a limit: the GPU sections' guards
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    return {"status": status, "seconds": round(time.time() - start, 1), **result}


def markdown(results: dict[str, dict], device: str) -> str:
    lines = [f"GPU suite on {device}, {time.strftime('%Y-%m-%d')}", "",
             "| section | goal | figures | meets goal |", "|---|---|---|---|"]
    for name, result in results.items():
        figures = "; ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in result.get("figures", {}).items()) or result["status"]
        meets = result.get("meets_goal")
        verdict = "yes" if meets else "no" if meets is not None else "n/a" if result["status"] == "ok" else result[
            "status"]
        lines.append(f"| {name} | {SECTIONS[name][1]} | {figures} | {verdict} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (seconds)")
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.only or SECTIONS:
        # The guard protects the lent GPU's minutes; a smoke run checks code paths on the CPU, however loaded, so
        # it has none.
        limit = None if args.smoke else SECTIONS[name][0]
        results[name] = run_section(name, args.out, args.smoke, limit)
        print(f"{name}: {results[name]['status']} ({results[name]['seconds']} s) {results[name].get('figures', {})}",
              flush=True)
    device = gpu_sections.device_name(args.smoke)
    (args.out / "gpu_suite.json").write_text(json.dumps({"device": device, "smoke": args.smoke,
                                                          "sections": results}, indent=2))
    (args.out / "gpu_suite.md").write_text(markdown(results, device))
    print((args.out / "gpu_suite.md").read_text())


if __name__ == "__main__":
    main()
