"""Every config composes and instantiates; struct mode turns a misspelled key into an error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from experiment_cases import CASES
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))

def resolve_all(cfg) -> None:
    """Resolve every interpolation outside the (read-only) hydra node."""
    for key in cfg:
        if key != "hydra":
            OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]


def test_every_experiment_has_a_test_case() -> None:
    missing = sorted(set(EXPERIMENTS) - set(CASES))
    assert not missing, f"add a row for {missing} to CASES in tests/experiment_cases.py"
    assert not set(CASES) - set(EXPERIMENTS), "CASES names an experiment that conf/experiment does not have"


def test_experiments_exist() -> None:
    assert {"nlcl_demo", "nlcl_rain100l", "nlcl_realrain", "nlcl_paper"} <= set(EXPERIMENTS)
    assert {"hcsc_imagenet_200ep", "hcsc_imagenet_multicrop_200ep", "mocov2_imagenet_200ep", "hcsc_cifar",
            "mocov2_cifar", "linear_imagenet", "linear_cifar"} <= set(EXPERIMENTS)
    assert {f"{m}_{d}" for m in ("dcodr", "dcodr_norec", "contrastive") for d in ("cars3d", "shapes")} | {
        "dcodr_shapes3d", "dcodr_smallnorb", "dcodr_celeba", "dcodr_edges2shoes"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("config_name", ["train", "eval"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(make_cfg, experiment, config_name, data_roots) -> None:
    cpu = [] if torch.cuda.is_available() else ["trainer.accelerator=cpu", "trainer.devices=1"]
    cfg = make_cfg(f"experiment={experiment}",
                   *CASES[experiment].data(data_roots), *cpu, config_name=config_name)
    resolve_all(cfg)
    assert instantiate(cfg.data) is not None
    assert instantiate(cfg.trainer, logger=False) is not None
    assert instantiate(cfg.model) is not None


def test_default_run_is_the_embedded_demo(make_cfg) -> None:
    cfg = make_cfg()
    assert cfg.task_name == "nlcl_demo"
    assert cfg.data.splits._target_.endswith("SyntheticRainSplits")
    assert cfg.trainer.accelerator == "cpu"


@pytest.mark.parametrize("override", ["trainer.max_epoch=3", "model.lamda_gan=2", "data.crop=64", "sead=1"])
def test_misspelled_keys_are_errors(make_cfg, override) -> None:
    with pytest.raises(ConfigCompositionException):
        make_cfg(override)


@pytest.mark.parametrize("group", ["trainer=cpu", "trainer=gpu", "trainer=ddp", "trainer=ddp_sim",
                                   "logger=csv", "logger=tensorboard", "logger=wandb", "logger=many",
                                   "debug=fdr", "debug=limit", "debug=overfit", "callbacks=none"])
def test_groups_compose(make_cfg, group) -> None:
    cfg = make_cfg(group)
    resolve_all(cfg)


def test_slurm_launcher_config_composes(make_cfg) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = make_cfg("launcher=slurm", "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4")
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.trainer.strategy == "ddp"  # train.py adds unused-parameter detection for NLCL (trainer_strategy)
    assert cfg.trainer.devices == 4 and cfg.trainer.num_nodes == 2


def test_ddp_unused_parameter_detection_follows_the_module_not_the_config(make_cfg) -> None:
    from contrastlab.run import trainer_strategy
    from lightning_modules.base import BaseModule
    from lightning_modules.dcodr.module import DCoDR
    from lightning_modules.moco.module import MoCoV2
    from lightning_modules.nlcl.module import NLCL

    assert NLCL.ddp_find_unused_parameters and not MoCoV2.ddp_find_unused_parameters
    assert not DCoDR.ddp_find_unused_parameters

    class TwoBackwardPasses(BaseModule):
        ddp_find_unused_parameters = True

    two, plain = TwoBackwardPasses(), BaseModule()
    assert trainer_strategy("ddp", two) == "ddp_find_unused_parameters_true"
    assert trainer_strategy("ddp_spawn", two) == "ddp_spawn_find_unused_parameters_true"
    assert trainer_strategy("ddp", plain) == "ddp"
    assert trainer_strategy("auto", two) == "auto"  # one device: nothing to detect
    assert trainer_strategy("ddp_find_unused_parameters_false", two) == "ddp_find_unused_parameters_false"  # user's

    class SameBuffersOnEveryRank(BaseModule):
        ddp_broadcast_buffers = False

    assert not MoCoV2.ddp_broadcast_buffers and NLCL.ddp_broadcast_buffers and DCoDR.ddp_broadcast_buffers
    for name in ("ddp", "ddp_spawn"):
        assert type(trainer_strategy(name, SameBuffersOnEveryRank())).__name__ == "DDPStrategy"
    for name in ("train", "eval"):
        assert "ddp_find_unused_parameters" not in make_cfg(config_name=name)
