"""The plumbing shared by ``train.py`` and ``eval.py``: resolvers, instantiation of callback/logger groups,
W&B run-id reuse on resume, ``metrics.json``, and closing loggers whatever happens."""

from __future__ import annotations

import copy
import json
import logging
import math
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only

from contrastlab.run_ids import run_id
from lightning_modules.base import BaseModule

log = logging.getLogger("contrastlab")


def ddp_strategy(base: str, find_unused_parameters: bool) -> str:
    """Lightning's registered name for ``base`` (ddp, ddp_spawn) with or without unused-parameter detection.

    Kept as a resolver so that run folders written before ``trainer_strategy`` existed still compose.
    """
    return f"{base}_find_unused_parameters_true" if find_unused_parameters else base


def trainer_strategy(strategy: Any, model: Any) -> Any:
    """The trainer's ``strategy`` for ``model``: plain ``ddp`` / ``ddp_spawn`` gains unused-parameter detection
    when the module declares ``ddp_find_unused_parameters`` (several backward passes per step, as NLCL's D and G
    steps), and becomes a ``DDPStrategy`` without per-step buffer broadcasts when it declares
    ``ddp_broadcast_buffers = False`` (MoCo / HCSC: queue and prototypes are identical on every rank); any other
    value (a Strategy object, an explicit name) is left as the user gave it."""
    if not (isinstance(strategy, str) and strategy in ("ddp", "ddp_spawn") and isinstance(model, BaseModule)):
        return strategy
    if not model.ddp_broadcast_buffers:
        from pytorch_lightning.strategies import DDPStrategy

        return DDPStrategy(start_method="spawn" if strategy == "ddp_spawn" else "popen", broadcast_buffers=False,
                           find_unused_parameters=model.ddp_find_unused_parameters)
    return ddp_strategy(strategy, model.ddp_find_unused_parameters)


def register_resolvers() -> None:
    """Custom OmegaConf resolvers used by ``conf/`` (idempotent)."""
    if not OmegaConf.has_resolver("ddp_strategy"):
        OmegaConf.register_new_resolver("ddp_strategy", ddp_strategy)
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda a, b: a * b)
    if not OmegaConf.has_resolver("div"):
        OmegaConf.register_new_resolver("div", lambda a, b: a / b)


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a ``name -> {_target_: ...}`` group (callbacks, loggers); nulls are skipped."""
    if not cfg:
        return []
    if not isinstance(cfg, DictConfig):
        raise TypeError("callbacks and logger configs must be mappings of name -> {_target_: ...}")
    objects = []
    for name, entry in cfg.items():
        if entry is None:
            continue
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            raise ValueError(f"config entry `{name}` has no `_target_`")
        objects.append(instantiate(entry))
    return objects


def is_multirun() -> bool:
    """Whether this process runs a job of a Hydra sweep (``-m``, a search, a submitit array)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_identity() -> dict[str, Any]:
    """W&B settings that put the jobs of one sweep side by side: the sweep folder as the group, the job's overrides
    as its name, tags and config (``sweep/overrides``), so the dashboard groups seeds as ``contrastlab.aggregate``
    does. Empty outside a sweep."""
    if not is_multirun():
        return {}
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    sweep_dir = Path(hydra_cfg.sweep.dir)
    overrides = list(hydra_cfg.overrides.task)
    job = OmegaConf.select(hydra_cfg, "job.num", default=None)
    return {"group": f"{sweep_dir.parent.parent.name}/{sweep_dir.name}",
            "name": hydra_cfg.job.override_dirname or f"job{job}",
            "tags": [o[:64] for o in overrides],  # W&B caps a tag at 64 characters
            "sweep/overrides": overrides, "sweep/job": job}


def instantiate_loggers(cfg: DictConfig | None, output_dir: str | Path) -> list[Any]:
    """Loggers; a W&B logger without an explicit id reuses the id saved in the run folder (resume = same run), and
    inside a sweep takes its group, name and tags from ``sweep_identity`` unless the config sets them."""
    if not cfg:
        return []
    id_file = Path(output_dir) / "wandb_run_id.txt"
    loggers = []
    for entry in cfg.values():
        if entry is None:
            continue
        if "WandbLogger" not in str(entry.get("_target_", "")):
            loggers.append(instantiate(entry))
            continue
        extra: dict[str, Any] = {}
        if entry.get("id") is None and id_file.exists():
            extra.update(id=id_file.read_text().strip(), resume="allow")
        sweep = sweep_identity()
        if sweep:
            if not entry.get("group"):
                extra["group"] = sweep["group"]
            extra["name"] = f"{entry.get('name') or 'job'} {sweep['name']}"  # task name + this job's overrides
            extra["tags"] = [*(entry.get("tags") or []), *sweep["tags"]]
            # wandb.init's `config` (instantiate's own first argument is named config: merged into the entry)
            entry = copy.copy(entry)  # keeps its place in the config, so ${task_name} still resolves
            with open_dict(entry):
                entry.config = {"sweep/overrides": sweep["sweep/overrides"], "sweep/job": sweep["sweep/job"]}
        loggers.append(instantiate(entry, _convert_="all", **extra))  # plain lists / dicts for wandb.init
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and rank_zero_only.rank == 0:
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(str(logger.experiment.id))  # starts the run (rank zero), as the first log would
    return loggers


def log_hyperparameters(trainer: pl.Trainer, model: pl.LightningModule, cfg: DictConfig) -> None:
    """Send the resolved config and parameter counts to every logger."""
    if not trainer.loggers:
        return
    params = {key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
              for key, value in cfg.items() if key != "hydra"}
    params["model/params_total"] = sum(p.numel() for p in model.parameters())
    params["model/params_trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for logger in trainer.loggers:
        logger.log_hyperparams(params)


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A flat ``{stage/name: float}`` dict of the scalar entries (tensors converted)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


@rank_zero_only
def write_metrics(metrics: Mapping[str, float | str], output_dir: str | Path) -> Path:
    """Write ``metrics.json`` (sorted keys; NaN/inf as strings so the file stays valid JSON; a failed run adds
    ``status`` and ``error``). Written to a temporary file first, so a kill never leaves half a file."""
    path = Path(output_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: (v if isinstance(v, str) or math.isfinite(v) else str(v)) for k, v in sorted(metrics.items())}
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(clean, indent=2) + "\n")
    partial.replace(path)
    return path


def close_loggers() -> None:
    """Finish a W&B run if one was started, so that a crash does not leave it open (and multiruns go on)."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


class _DropTips(logging.Filter):
    """Lightning's advertising tips (litlogger, litmodels) say nothing about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("\U0001f4a1 Tip")


def quiet_known_warnings() -> None:
    """Warnings that say nothing to a user of this project: Lightning's internal use of a torch API it deprecated,
    and the checkpoint folder being non-empty on a resume (it is the run's own folder, checked beforehand)."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")


def route_library_logs() -> None:
    """Send Lightning's messages through the root logger Hydra configured (console and ``<run>/train.log``).

    Lightning keeps its own console handler when it is imported before logging is configured, so its lines
    (and ours) never reached the log file.
    """
    rank_zero_logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in rank_zero_logger.filters):
        rank_zero_logger.addFilter(_DropTips())
    if not logging.getLogger().handlers:
        return
    for name in ("pytorch_lightning", "lightning_fabric"):
        library = logging.getLogger(name)
        for handler in list(library.handlers):
            library.removeHandler(handler)
        library.propagate = True


@contextmanager
def run_context(output_dir: str | Path) -> Iterator[None]:
    """Print the run folder at start and end (also after a failure) and always close the loggers. A user error
    (``contrastlab.errors``) adds nothing here: the entry point reports it as one line."""
    from contrastlab.errors import user_facing

    route_library_logs()
    quiet_known_warnings()
    rank_zero_info(f"[contrastlab] output directory: {output_dir}")
    failed_by_user = False
    try:
        yield
    except Exception as error:
        failed_by_user = user_facing(error) is not None
        if not failed_by_user:
            rank_zero_info(f"[contrastlab] run failed; logs and checkpoints so far are in {output_dir}")
        raise
    finally:
        close_loggers()
        if not failed_by_user:
            rank_zero_info(f"[contrastlab] output directory: {output_dir}")


class ConfigPrinter(pl.Callback):
    """Print the composed config once the data has been set up, so that a bad path or file is reported as one
    line instead of below a screen of YAML (the copy in ``config_tree.yaml`` is written at once)."""

    def __init__(self, cfg: DictConfig, output_dir: str | Path) -> None:
        self.cfg, self.output_dir = cfg, output_dir
        save_config(cfg, output_dir)
        self._printed = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self._printed:
            self._printed = True
            print_config(self.cfg, self.output_dir)


@rank_zero_only
def save_config(cfg: DictConfig, output_dir: str | Path) -> None:
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / "config_tree.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=False))


def print_config(cfg: DictConfig, output_dir: str | Path) -> None:
    """Pretty-print the resolved config (rank zero) and keep a copy in the run folder."""
    if rank_zero_only.rank != 0:
        return
    text = OmegaConf.to_yaml(cfg, resolve=False)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / "config_tree.yaml").write_text(text)
    try:
        from rich.console import Console
        from rich.syntax import Syntax

        Console(stderr=False).print(Syntax(text, "yaml", theme="ansi_dark", line_numbers=False))
    except ImportError:  # pragma: no cover - rich is a dependency
        print(text)
