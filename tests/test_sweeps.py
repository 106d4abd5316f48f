"""Sweeps as researchers run them: seed aggregation, the Optuna search, W&B grouping, the embedding map."""

from __future__ import annotations

import csv
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import CLEAN_ENV, NLCL_TINY, ROOT

from contrastlab.aggregate import aggregate, main
from contrastlab.sweep_jobs import describe

NLCL_FAST = [*NLCL_TINY, "data.samples_per_epoch=2", "trainer.max_epochs=1", "trainer.limit_val_batches=1",
             "print_config=false", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env={**CLEAN_ENV, "PYTHONUNBUFFERED": "1",
                                                                      **(env or {})}, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def fake_job(folder: Path, overrides: list[str], seed: int, metrics: dict | None, log: str = "") -> None:
    """A run folder as train.py leaves it: .hydra/{config,overrides}.yaml, metrics.json (None: still running)."""
    (folder / ".hydra").mkdir(parents=True)
    config = {"seed": seed, "model": {"lambda_layer": float(overrides[0].split("=")[1]) if overrides else 1.0}}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"seed={seed}",
                                                                      "data.root=/d", "hydra.run.dir=x"]))
    (folder / "checkpoints").mkdir()
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if log:
        (folder / "train.log").write_text(log)


@pytest.fixture
def sweep(tmp_path: Path) -> tuple[Path, dict]:
    """Two settings x three seeds, as a submitit multirun: job 5 diverged, job 6 is still running, 7 failed."""
    root = tmp_path / "multirun"
    (root / ".submitit" / "123_0").mkdir(parents=True)
    (root / ".submitit" / "123_0" / "123_0_0_log.out").write_text("log")
    psnr = {("0", 1): 24.0, ("0", 2): 25.5, ("0", 3): 24.6, ("1", 1): 26.0, ("1", 2): 25.0}
    for job, ((weight, seed), value) in enumerate(psnr.items()):
        fake_job(root / str(job), [f"model.lambda_layer={weight}"], seed,
                 {"test/psnr": value, "test/ssim": value / 40, "val/psnr": value - 1, "time/fit_minutes": 3.0})
    fake_job(root / "5", ["model.lambda_layer=1"], 3, {"status": "diverged", "error": "loss nan at step 7",
                                                        "train/loss": "nan"})
    fake_job(root / "6", ["model.lambda_layer=1"], 4, None)
    fake_job(root / "7", ["model.lambda_layer=1"], 5, None, log="[contrastlab] run failed; logs and checkpoints...")
    return root, psnr


def test_describe_matches_numpy() -> None:
    values = [0.31, 0.29, 0.335, 0.301]
    stats = describe(values)
    assert stats.mean == pytest.approx(np.mean(values)) and stats.std == pytest.approx(np.std(values, ddof=1))
    assert (stats.min, stats.max, stats.n) == (min(values), max(values), 4)
    assert math.isnan(describe([1.0]).std) and describe([1.0]).text() == "1.000"


def test_aggregate_groups_seeds_and_names_jobs_left_out(sweep, tmp_path) -> None:
    root, psnr = sweep
    groups, metrics = aggregate([root], tmp_path / "report", metric_patterns=["test/*"])
    assert metrics == ["test/psnr", "test/ssim"]
    by_label = {g.label: g for g in groups}
    assert set(by_label) == {"model.lambda_layer=0", "model.lambda_layer=1"}  # data.root, hydra.* are common
    for weight in ("0", "1"):
        values = [v for (w, _), v in psnr.items() if w == weight]
        stats = by_label[f"model.lambda_layer={weight}"].stats("test/psnr")
        assert stats.n == len(values) and stats.mean == pytest.approx(statistics.mean(values))
        assert stats.std == pytest.approx(statistics.stdev(values)) and stats.min == min(values)
    report = (tmp_path / "report" / "aggregate.md").read_text()
    assert "24.700 ± 0.755" in report  # seeds 1, 2, 3 of lambda_layer=0
    assert "diverged: loss nan at step 7" in report and "unfinished: 6" in report and "failed: 7" in report
    rows = list(csv.DictReader((tmp_path / "report" / "aggregate.csv").open()))
    row = next(r for r in rows if r["group"] == "model.lambda_layer=1" and r["metric"] == "test/psnr")
    assert row["n"] == "2" and row["seeds"] == "1;2" and row["failed"].endswith("7") and "5" in row["failed"]
    assert (tmp_path / "report" / "aggregate_test_psnr.png").stat().st_size > 5000


def test_aggregate_cli_groups_by_a_config_key_across_folders(sweep, tmp_path, capsys) -> None:
    root, _ = sweep
    jobs = [str(root / str(n)) for n in range(5)]
    assert main([*jobs, "--by", "model.lambda_layer", "--metrics", "test/psnr", "--out", str(tmp_path / "r"),
                 "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "| model.lambda_layer=0.0 | 3 | 1, 2, 3 | 24.700 ± 0.755 |" in printed
    assert not list((tmp_path / "r").glob("*.png"))
    assert main([str(tmp_path / "nowhere")]) == 1
    assert "error: no such folder" in capsys.readouterr().err


def test_a_search_never_optimises_a_test_metric(make_cfg) -> None:
    from contrastlab.errors import ConfigError
    from train import objective_value, sweep_objective

    with pytest.raises(ConfigError, match="test metric"):
        sweep_objective(make_cfg("optimized_metric=test/psnr"))
    names = sweep_objective(make_cfg("optimized_metric=[val/domain_acc,val/content_acc]"))
    assert objective_value({"val/domain_acc": 0.3, "val/content_acc": 0.7}, names) == [0.3, 0.7]
    with pytest.raises(ConfigError, match="val/psnr was not logged"):
        objective_value({"val/knn_top1": 0.5}, ["val/psnr"])


def test_a_failed_trial_reports_nan_and_says_so(make_cfg, tmp_path) -> None:
    from train import failed_trial

    cfg = make_cfg("optimized_metric=val/psnr", output_dir=tmp_path / "trial")
    assert math.isnan(failed_trial(cfg, ["val/psnr"], RuntimeError("out of memory")))
    written = json.loads((tmp_path / "trial" / "metrics.json").read_text())
    assert written["status"] == "failed" and "out of memory" in written["error"]
    assert all(math.isnan(v) for v in failed_trial(cfg, ["a", "b"], RuntimeError("x")))


@pytest.mark.slow
def test_optuna_search_three_trials_end_to_end(tmp_path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep_dir = tmp_path / "search"
    run("train.py", "hparams_search=nlcl_optuna", "experiment=nlcl_demo", *NLCL_FAST, "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2", f"hydra.sweep.dir={sweep_dir}", f"paths.log_dir={tmp_path}")
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"model.optimizer.lr", "model.lambda_layer", "model.lambda_loc",
                                           "model.lambda_sparsity"}
    trials = [json.loads((sweep_dir / str(n) / "metrics.json").read_text()) for n in range(3)]
    assert results["best_value"] == pytest.approx(max(t["val/psnr"] for t in trials))
    assert not any(k.startswith("test/") for t in trials for k in t)  # the reported split stays unseen


@pytest.mark.slow
def test_a_diverged_job_does_not_stop_the_sweep(tmp_path) -> None:
    """A multirun through the CLI; optimized_metric set: the job that diverges leaves its status and NaN, the next
    job still runs."""
    sweep_dir = tmp_path / "sweep"
    run("train.py", "-m", "experiment=nlcl_demo", *NLCL_FAST, "optimized_metric=val/psnr", "test=false",
        "+callbacks.poison._target_=helpers.PoisonWeightsAtEpoch", "+callbacks.poison.epoch=0,5",
        f"hydra.sweep.dir={sweep_dir}", f"paths.log_dir={tmp_path}", env={"PYTHONPATH": str(ROOT / "tests")})
    for job, epoch in (("0", "0"), ("1", "5")):  # one folder per job, with its own overrides
        assert f"+callbacks.poison.epoch={epoch}" in (sweep_dir / job / ".hydra" / "overrides.yaml").read_text()
    diverged = json.loads((sweep_dir / "0" / "metrics.json").read_text())
    assert diverged["status"] == "diverged"
    assert "val/psnr" in json.loads((sweep_dir / "1" / "metrics.json").read_text())
    groups, _ = aggregate([sweep_dir], tmp_path / "report", metric_patterns=["val/psnr"], plot=False)
    assert [len(g.finished) for g in groups] == [0, 1]


def test_wandb_jobs_of_a_sweep_share_a_group(make_cfg, tmp_path, monkeypatch) -> None:
    wandb = pytest.importorskip("wandb")
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from contrastlab.run import instantiate_loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg("logger=wandb", "seed=2", output_dir=tmp_path / "job")
    OmegaConf.set_readonly(cfg.hydra, False)  # as a sweep job's Hydra config, without launching a sweep
    with open_dict(cfg):
        cfg.hydra.mode = "MULTIRUN"
        cfg.hydra.sweep.dir = str(tmp_path / "train" / "multiruns" / "2026-01-01_00-00-00_abc123")
        cfg.hydra.job.override_dirname = "model.lambda_layer=0,seed=2"
        cfg.hydra.job.num = 3
        cfg.hydra.overrides.task = ["model.lambda_layer=0", "seed=2"]
    HydraConfig.instance().set_config(cfg)
    try:
        logger = instantiate_loggers(cfg.logger, tmp_path / "job")[0]
        run_ = logger.experiment
        assert run_.group == "train/2026-01-01_00-00-00_abc123"
        assert {"model.lambda_layer=0", "seed=2"} <= set(run_.tags)
        assert run_.name.endswith("model.lambda_layer=0,seed=2")
        assert run_.config["sweep/overrides"] == ["model.lambda_layer=0", "seed=2"]
    finally:
        wandb.finish()


SEARCHES = sorted(p.stem for p in (ROOT / "conf" / "hparams_search").glob("*.yaml"))


@pytest.mark.parametrize("search", SEARCHES)
def test_every_search_optimises_validation_with_a_seeded_sampler(make_cfg, search) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = make_cfg(f"hparams_search={search}")
    metrics = cfg.optimized_metric if not isinstance(cfg.optimized_metric, str) else [cfg.optimized_metric]
    directions = cfg.hydra.sweeper.direction
    directions = [directions] if isinstance(directions, str) else list(directions)
    assert all(m.startswith("val/") for m in metrics) and len(directions) == len(metrics)
    assert cfg.test is False and cfg.hydra.sweeper.sampler.seed is not None and cfg.hydra.sweeper.n_trials > 0
    assert cfg.hydra.sweeper.params
