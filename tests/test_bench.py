"""The benchmark scripts cannot rot: the GPU suite's CPU smoke mode runs every section end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import CLEAN_ENV, ROOT


@pytest.mark.slow
def test_gpu_suite_smoke_runs_every_section(tmp_path) -> None:
    result = subprocess.run([sys.executable, "bench/gpu_suite.py", str(tmp_path), "--smoke"], cwd=ROOT,
                            env=CLEAN_ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    suite = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert set(suite["sections"]) == {"moco_hcsc", "nlcl", "kmeans", "dcodr", "jpeg"}
    for name, section in suite["sections"].items():
        assert section["status"] == "ok", (name, section["status"])
        assert section["figures"] and all(v == v for v in section["figures"].values() if isinstance(v, float))
    assert suite["sections"]["jpeg"]["figures"]["device decode images/s"] > 0
    table = (tmp_path / "gpu_suite.md").read_text()
    assert table.count("\n| ") == 6  # header + one row per section


def test_kmeans_faiss_bench_runs_without_faiss_or_with_it(tmp_path) -> None:
    result = subprocess.run([sys.executable, "bench/kmeans_faiss.py", "--n", "2000", "--clusters", "50", "--upper",
                             "20", "--bank", "1000", "--queries", "100", "--repeats", "1", "--out",
                             str(tmp_path / "k.json")], cwd=ROOT, env=CLEAN_ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "k.json").read_text())["seconds"]["assignment pass: ours"] > 0


@pytest.mark.slow
def test_reproduce_writes_its_tables_and_plots_at_tiny_scale(tmp_path, paired_rain_dir, tiny_cars3d_root) -> None:
    from datamodules.synthetic import write_image_folder

    data = tmp_path / "data"  # the layout of ../shared/data, in miniature
    write_image_folder(data / "cifar10", num_classes=4, per_class=12, size=32, split="test", seed=0)
    (data / "rain100l").symlink_to(paired_rain_dir)
    (data / "cars3d").symlink_to(tiny_cars3d_root)
    out = tmp_path / "results"
    command = [sys.executable, "bench/reproduce.py", "--scale", "tiny", "--data-root", str(data), "--seeds", "1",
               "--nlcl-seeds", "1", "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, env=CLEAN_ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    table = (out / "tiny.md").read_text()
    assert "HCSC NMI above MoCo v2's" in table and "| random | 1 |" in table and "| hcsc | 1 |" in table
    assert "held-out PSNR-Y >= rainy + 1.0 dB" in table and "| no LayerContra | 1 |" in table
    assert "equal wall time: dcodr_norec domain acc" in table and "| contrastive (equal wall time) | 1 |" in table
    for protocol in ("moco_hcsc", "nlcl", "dcodr"):
        assert (out / f"tiny_{protocol}.png").stat().st_size > 1000
    summary = json.loads((out / "tiny.json").read_text())
    assert set(summary) == {"moco_hcsc", "nlcl", "dcodr"} and all("passed" in v for v in summary.values())
    # Resumable: a second call keeps the finished runs instead of training again.
    before = (out / "runs" / "tiny_moco_seed1" / "metrics.json").stat().st_mtime
    subprocess.run(command + ["--only", "moco_hcsc"], cwd=ROOT, env=CLEAN_ENV, capture_output=True, text=True,
                   check=True)
    assert (out / "runs" / "tiny_moco_seed1" / "metrics.json").stat().st_mtime == before
    assert "held-out PSNR-Y" in (out / "tiny.md").read_text()  # the other protocols' sections are kept


def test_reproduce_gpu_scale_names_experiments_that_exist() -> None:
    """``--scale gpu`` names its own experiments (ResNet trunks, the official NLCL networks); each of them runs
    in ``test_fast_dev_run``, and the reproduction code they go through is the tiny scale's, so the GPU command
    cannot rot. (Running ``--scale gpu_tiny`` here too cost 40 s of the suite's 10 minutes.)"""
    sys.path.insert(0, str(ROOT / "bench"))
    from repro import dcodr, moco_hcsc, nlcl

    experiments = {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")}
    named = [*moco_hcsc.EXPERIMENTS["gpu"], nlcl.EXPERIMENTS["gpu"],
             *(dcodr.EXPERIMENTS["gpu"].format(v) for v in dcodr.VARIANTS)]
    assert set(named) <= experiments, sorted(set(named) - experiments)
    assert {"mocov2_cifar", "hcsc_cifar"} <= set(moco_hcsc.EXPERIMENTS["gpu"])
