"""End to end through train.py / eval.py: fast_dev_run of every experiment, resume, DDP, sweeps, W&B."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    CLEAN_ENV,
    DCODR_GENERATOR_TINY,
    DCODR_TINY,
    HCSC_TINY,
    NLCL_TINY,
    REPR_TINY,
    ROOT,
    SMALL_TRUNK,
    rain100l_checkpoint,
)
from experiment_cases import CASES
from test_configs import EXPERIMENTS

# One CPU process: the ImageNet experiments' DDP strategy is replaced so the in-process run stays single-process.
CPU = ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true", "trainer.strategy=auto"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run(make_cfg, experiment, data_roots) -> None:
    from train import train

    case = CASES[experiment]
    cfg = make_cfg(f"experiment={experiment}", *case.overrides(data_roots), *CPU, "trainer.fast_dev_run=true")
    metrics = train(cfg)
    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert written == pytest.approx(metrics)
    assert case.metrics <= set(metrics), f"{experiment}: missing {sorted(case.metrics - set(metrics))}"
    assert not case.absent & set(metrics), f"{experiment}: unexpected {sorted(case.absent & set(metrics))}"
    if case.check:
        case.check(metrics)
    if "embedding_map" in (cfg.callbacks or {}):  # every SSL and DCoDR run ends with its embedding map
        assert (Path(cfg.paths.output_dir) / "images" / "embedding_map.png").stat().st_size > 5000


@pytest.mark.parametrize("experiment", ["nlcl_demo", "hcsc_cifar", "dcodr_shapes"])
def test_bf16_mixed_precision_runs_every_method(make_cfg, experiment, data_roots) -> None:
    from train import train

    cfg = make_cfg(f"experiment={experiment}", *CASES[experiment].overrides(data_roots), *CPU,
                   "trainer.precision=bf16-mixed", "trainer.fast_dev_run=true")
    metrics = train(cfg)
    finite = [v for k, v in metrics.items() if k.startswith("train/")]
    assert finite and all(v == v and abs(v) < 1e6 for v in finite)  # no NaN or overflow in the fp32 losses


def test_hcsc_with_views_made_on_the_device(make_cfg, tiny_imagenet_root) -> None:
    """The on-device augmentation stage replaces the loader-side one without touching the method."""
    from train import train

    cfg = make_cfg("experiment=hcsc_imagenet_200ep", "data=imagenet_device_views", f"data.root={tiny_imagenet_root}",
                   "data.device_views.specs=[{size:32,count:2}]", "data.device_views.base_size=40",
                   "data.eval_transform.resize=40", "data.eval_transform.crop=32", *REPR_TINY, *SMALL_TRUNK,
                   *HCSC_TINY, *CPU, "trainer.fast_dev_run=true")
    metrics = train(cfg)
    assert "train/proto" in metrics and "test/knn_top1" in metrics


def last_checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def test_resume_after_a_kill_continues_steps_optimiser_and_schedule(make_cfg, tmp_path) -> None:
    from train import train

    common = ["experiment=nlcl_demo", *NLCL_TINY, *CPU, "trainer.max_epochs=3", "data.samples_per_epoch=6",
              "callbacks.model_checkpoint.every_n_epochs=1", "test=false", "trainer.check_val_every_n_epoch=5"]
    train(make_cfg(*common, output_dir=tmp_path / "straight"))
    reference = last_checkpoint(tmp_path / "straight")

    killed = tmp_path / "killed"
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(make_cfg(*common, "+callbacks.crash._target_=helpers.CrashAtEpoch", "+callbacks.crash.epoch=2",
                       output_dir=killed))
    interrupted = last_checkpoint(killed)
    assert interrupted["epoch"] == 1 and interrupted["global_step"] == 2 * 2 * 3  # 2 epochs x 3 its x (D + G)
    assert (killed / "checkpoints" / "on_exception.ckpt").exists()

    train(make_cfg(*common, f"ckpt_path={killed / 'checkpoints' / 'last.ckpt'}", output_dir=killed))
    resumed = last_checkpoint(killed)
    assert resumed["global_step"] == reference["global_step"] == 3 * 3 * 2
    assert resumed["epoch"] == reference["epoch"] == 2
    for ours, theirs in zip(resumed["optimizer_states"], reference["optimizer_states"]):
        steps = [[float(s["step"]) for s in opt["state"].values()] for opt in (ours, theirs)]
        assert steps[0] == steps[1] and steps[0]
        assert [g["lr"] for g in ours["param_groups"]] == pytest.approx([g["lr"] for g in theirs["param_groups"]])
    for ours, theirs in zip(resumed["lr_schedulers"], reference["lr_schedulers"]):
        assert ours["last_epoch"] == theirs["last_epoch"] == 9
        assert ours["_last_lr"] == pytest.approx(theirs["_last_lr"])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # A fresh rendezvous port per run: back-to-back DDP runs must not meet a port still in TIME_WAIT.
    full_env = {**CLEAN_ENV, "PYTHONUNBUFFERED": "1", "MASTER_PORT": str(free_port()), **(env or {})}
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_sim_hcsc_and_dcodr_train_on_two_processes(tmp_path, tiny_cifar_root) -> None:
    """HCSC clusters the sharded training set inside Lightning; DCoDR draws per-rank balanced batches."""
    common = ["trainer=ddp_sim", "trainer.max_epochs=1", "print_config=false", "trainer.enable_progress_bar=false",
              f"paths.log_dir={tmp_path}"]
    cli("train.py", "experiment=hcsc_cifar", f"data.root={tiny_cifar_root}", *REPR_TINY, *SMALL_TRUNK, *HCSC_TINY,
        "data.global_batch_size=8", *common, f"hydra.run.dir={tmp_path / 'hcsc'}",
        "+callbacks.broadcast._target_=helpers.RecordDDPBroadcast", f"+callbacks.broadcast.path={tmp_path / 'b.json'}",
        env={"PYTHONPATH": str(ROOT / "tests")})
    broadcast = json.loads((tmp_path / "b.json").read_text())  # queue and hierarchy are not re-sent every step
    assert broadcast["wrapper"] == "DistributedDataParallel" and broadcast["bytes_per_step"] == 0, broadcast
    hcsc = json.loads((tmp_path / "hcsc" / "metrics.json").read_text())
    assert (tmp_path / "hcsc" / "images" / "embedding_map.png").exists()  # both ranks' embeddings, drawn once
    assert hcsc["cluster/nonempty_0"] >= 1 and "test/knn_top1" in hcsc and "test/nmi" in hcsc
    cli("train.py", "experiment=dcodr_shapes", "data.source.per_domain=24", *DCODR_TINY, *DCODR_GENERATOR_TINY,
        *common, f"hydra.run.dir={tmp_path / 'dcodr'}")
    dcodr = json.loads((tmp_path / "dcodr" / "metrics.json").read_text())
    assert {"test/domain_acc", "test/retrieval_domain_top1", "train/reconstruction"} <= set(dcodr)
    checkpoint = torch.load(tmp_path / "dcodr" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # 88 training images (22 of each shape's 24), one global batch of 2 x 4 dealt to the 2 ranks
    assert checkpoint["global_step"] == 88 // (2 * 4)


def test_misspelled_key_on_the_cli_names_it() -> None:
    result = subprocess.run([sys.executable, "train.py", "trainer.max_epoch=2"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode != 0 and "max_epoch" in result.stderr


def test_wandb_offline_writes_its_run_files(make_cfg, tmp_path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    from train import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg("experiment=nlcl_demo", "logger=wandb", *NLCL_TINY, *CPU, "trainer.max_epochs=1",
                   "data.samples_per_epoch=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                   output_dir=tmp_path / "wb")
    train(cfg)
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    saved_id = (tmp_path / "wb" / "wandb_run_id.txt").read_text().strip()
    assert runs[0].name.endswith(saved_id)


def test_eval_tests_a_checkpoint_and_predicts_a_folder(make_cfg, tmp_path, paired_rain_dir) -> None:
    from eval import evaluate

    common, ckpt = rain100l_checkpoint(make_cfg, paired_rain_dir, tmp_path / "fit", CPU)
    metrics = evaluate(make_cfg(*common, f"ckpt_path={ckpt}", config_name="eval", output_dir=tmp_path / "test"))
    assert {"test/psnr", "test/ssim_y", "test/psnr_rainy"} <= set(metrics)
    written = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert written["test/psnr"] == pytest.approx(metrics["test/psnr"])

    predicted = evaluate(make_cfg(*common, f"ckpt_path={ckpt}", "mode=predict",
                                  f"data.predict_dir={paired_rain_dir / 'input'}", "model.save_test_outputs=true",
                                  config_name="eval", output_dir=tmp_path / "predict"))
    written = sorted(p.name for p in (tmp_path / "predict" / "predictions").iterdir())
    assert written == sorted(p.name for p in (paired_rain_dir / "input").iterdir())
    assert predicted["predict/images"] == len(written)  # one file per input: the test-output writer stays silent
    assert not (tmp_path / "predict" / "test_outputs").exists()

    with pytest.raises(FileNotFoundError, match="ckpt_path"):
        evaluate(make_cfg(*common, "ckpt_path=/no/such.ckpt", config_name="eval", output_dir=tmp_path / "x"))


def test_test_ckpt_best_tests_the_best_validation_checkpoint(make_cfg, tmp_path) -> None:
    from contrastlab.errors import ConfigError
    from eval import evaluate
    from train import train

    common = ["experiment=nlcl_demo", *NLCL_TINY, *CPU, "trainer.max_epochs=2", "data.samples_per_epoch=4",
              "trainer.check_val_every_n_epoch=1", "callbacks.model_checkpoint.every_n_epochs=1"]
    with pytest.raises(ConfigError, match="test_ckpt=best needs callbacks.model_checkpoint.monitor"):
        train(make_cfg(*common, "test_ckpt=best", output_dir=tmp_path / "unmonitored"))
    monitored = [*common, "callbacks.model_checkpoint.monitor=val/psnr",
                 "callbacks.model_checkpoint.save_on_train_epoch_end=false"]
    metrics = train(make_cfg(*monitored, "test_ckpt=best", output_dir=tmp_path / "fit"))
    best = list((tmp_path / "fit" / "checkpoints").glob("epoch_*.ckpt"))
    assert len(best) == 1  # save_top_k=1: the best val/psnr so far
    again = evaluate(make_cfg(*monitored, f"ckpt_path={best[0]}", config_name="eval", output_dir=tmp_path / "eval"))
    assert again["test/psnr"] == pytest.approx(metrics["test/psnr"])


def test_gradient_accumulation_is_refused_by_moco_in_one_line(make_cfg, data_roots) -> None:
    """MoCo's momentum update and enqueue run per batch: accumulation would silently change both."""
    from contrastlab.errors import ConfigError
    from train import train

    cfg = make_cfg("experiment=hcsc_cifar", *CASES["hcsc_cifar"].overrides(data_roots), *CPU,
                   "trainer.accumulate_grad_batches=2", "trainer.fast_dev_run=true")
    with pytest.raises(ConfigError, match="accumulate_grad_batches=2 is not supported"):
        train(cfg)


@pytest.mark.slow
@pytest.mark.ddp
def test_two_torchrun_nodes_share_one_run_folder_resume_it_and_keep_their_own_streams(make_cfg, tmp_path) -> None:
    """Two torchrun "nodes" on this machine (static rendezvous, one process each) write one run folder; a second
    launch of both resumes it with ckpt_path=last, every rank continuing its own random stream; the sharded,
    rank-reduced test scores equal one process's."""
    from hydra.utils import instantiate

    from callbacks.randomness import reseed, stream_seed
    from lightning_modules.components.restoration_eval import RestorationMetrics

    common = ["experiment=nlcl_demo", *NLCL_TINY, "data.samples_per_epoch=8", "data.val_images=2",
              "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2", "trainer.strategy=ddp",
              "trainer.enable_progress_bar=false", "print_config=false", f"paths.log_dir={tmp_path}",
              "+callbacks.draws._target_=helpers.RecordEpochDraws", f"+callbacks.draws.path={tmp_path / 'draws'}"]

    def launch(*extra: str) -> None:
        port = str(free_port())
        env = {**CLEAN_ENV, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT / "tests")}
        nodes = [subprocess.Popen(["torchrun", "--nnodes=2", f"--node-rank={node}", "--nproc-per-node=1",
                                   "--master-addr=127.0.0.1", f"--master-port={port}", "train.py", *common, *extra],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for node in (0, 1)]
        outputs = [node.communicate()[0] for node in nodes]
        assert all(node.returncode == 0 for node in nodes), "\n".join(o[-2000:] for o in outputs)

    launch("trainer.max_epochs=1")
    runs = list((tmp_path / "nlcl_demo" / "runs").iterdir())
    assert len(runs) == 1  # both nodes wrote into rank 0's folder
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    launch("trainer.max_epochs=2", "ckpt_path=last", "test=false", f"hydra.run.dir={runs[0]}")
    assert len(list((tmp_path / "nlcl_demo" / "runs").iterdir())) == 1
    checkpoint = torch.load(runs[0] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # 8 samples / (2 ranks x batch 2) = 2 iterations an epoch, D + G each, 2 epochs (the second one resumed)
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 2 * 2 * 2
    draws = {rank: [json.loads(line) for line in (tmp_path / f"draws.rank{rank}").read_text().splitlines()]
             for rank in (0, 1)}
    for rank, lines in draws.items():
        assert [epoch for epoch, _ in lines] == [0, 1]
        for epoch, values in lines:
            reseed(stream_seed(42, rank, epoch))
            assert values == pytest.approx(torch.rand(4).tolist())
    assert draws[0][0][1] != draws[1][0][1] and draws[0][1][1] != draws[1][1][1]  # ranks draw differently
    # The rainy-input scores depend on the data alone: the sharded, rank-reduced value equals one process's.
    datamodule = instantiate(make_cfg("experiment=nlcl_demo", *NLCL_TINY).data)
    datamodule.setup("test")
    reference = RestorationMetrics()
    for sample in datamodule.test_dataloader():
        reference.update(sample["rainy"] * 0.5 + 0.5, sample["rainy"] * 0.5 + 0.5, sample["target"] * 0.5 + 0.5)
    expected = reference.compute()
    assert metrics["test/psnr_rainy"] == pytest.approx(float(expected["psnr_rainy"]), rel=1e-5)
    assert metrics["test/ssim_rainy"] == pytest.approx(float(expected["ssim_rainy"]), rel=1e-5)
    assert (runs[0] / "images" / "test_grid.png").exists()
