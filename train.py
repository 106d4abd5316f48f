"""Train a method: compose the config, seed, instantiate, fit, test, write ``metrics.json``.

    python train.py                                        # the embedded CPU demo (NLCL on synthetic rain)
    python train.py experiment=nlcl_rain100l data.root=../shared/data/rain100l
    python train.py -m experiment=hcsc_cifar model.optimizer.lr=0.03,0.06
    python train.py hparams_search=nlcl_optuna experiment=nlcl_rain100l_cpu data.root=...   # an Optuna search
    python train.py <same overrides> hydra.run.dir=<run folder> ckpt_path=last   # resume that run
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from pytorch_lightning.utilities import rank_zero_info  # noqa: E402

from callbacks.base import ArtifactCallback, ReportingCallback  # noqa: E402
from callbacks.checkpointing import weights_are_finite  # noqa: E402
from contrastlab.checkpoints import (  # noqa: E402
    newest_checkpoint,
    read_progress,
    resolve_ckpt_path,
    trainer_load_options,
    trust_checkpoints,
)
from contrastlab.errors import ConfigError, DivergenceError, report_user_errors  # noqa: E402
from contrastlab.loggers import HistoryCSVLogger, truncate_csv_history  # noqa: E402
from contrastlab.run import (  # noqa: E402
    ConfigPrinter,
    instantiate_group,
    instantiate_loggers,
    is_multirun,
    log,
    log_hyperparameters,
    register_resolvers,
    run_context,
    scalar_metrics,
    trainer_strategy,
    write_metrics,
)
from datamodules.base import BaseDataModule  # noqa: E402
from lightning_modules.base import BaseModule  # noqa: E402

register_resolvers()


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) the configured model; return the final metrics."""
    output_dir = cfg.paths.output_dir
    trust_checkpoints(cfg.get("trust_checkpoint", False))
    # Before anything is built or written: a wrong ckpt_path fails here, and a fresh run never adopts a folder
    # that holds another run's checkpoints.
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir) if cfg.train else None
    pl.seed_everything(cfg.seed, workers=True)

    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    model: pl.LightningModule = instantiate(cfg.model)
    callbacks = instantiate_group(cfg.get("callbacks"))
    if cfg.get("print_config"):
        callbacks.append(ConfigPrinter(cfg, output_dir))
    loggers = instantiate_loggers(cfg.get("logger"), output_dir)
    if ckpt_path:  # the rows logged after the restored step are logged again by the resumed run
        step = (read_progress(Path(ckpt_path)) or (-1, -1))[0]
        for logger in loggers:
            if isinstance(logger, HistoryCSVLogger):
                truncate_csv_history(Path(logger.log_dir) / "metrics.csv", step)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                      strategy=trainer_strategy(cfg.trainer.get("strategy", "auto"), model))
    log_hyperparameters(trainer, model, cfg)

    metrics: dict[str, float] = {}
    if cfg.train:
        started = time.perf_counter()
        fit(trainer, model, datamodule, ckpt_path, output_dir)
        metrics.update(scalar_metrics(trainer.callback_metrics))
        metrics["time/fit_minutes"] = (time.perf_counter() - started) / 60  # this call's fit, monitors included
    has_test = datamodule.has_test_data() if isinstance(datamodule, BaseDataModule) else True
    if cfg.test and has_test:
        # The final weights are evaluated (the papers select no checkpoint on held-out data), or with
        # test_ckpt=best the checkpoint whose monitored validation metric was best.
        ckpt = None if cfg.train or not cfg.get("ckpt_path") else resolve_ckpt_path(cfg.ckpt_path, output_dir)
        if cfg.train and cfg.get("test_ckpt", "last") == "best" and not trainer.fast_dev_run:  # (no checkpoints)
            ckpt = best_checkpoint(trainer)
            rank_zero_info(f"[contrastlab] testing the best validation checkpoint: {ckpt}")
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, **trainer_load_options())
        metrics.update(scalar_metrics(trainer.callback_metrics))

    if trainer.is_global_zero:
        write_metrics(metrics, output_dir)
        print_summary(model, trainer, metrics, output_dir)
    return metrics


def best_checkpoint(trainer: pl.Trainer) -> str:
    """The file kept by the checkpoint callback that monitors a validation metric (``test_ckpt=best``)."""
    monitored = [cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)]
    if not monitored or not monitored[0].best_model_path:
        raise ConfigError("test_ckpt=best needs callbacks.model_checkpoint.monitor (a val/* metric) and at least "
                          "one validation run that saved a checkpoint")
    return monitored[0].best_model_path


def fit(trainer: pl.Trainer, model: pl.LightningModule, datamodule: pl.LightningDataModule, ckpt_path: str | None,
        output_dir: str) -> None:
    """``trainer.fit``; a diverged run leaves ``metrics.json`` with its status and stops with one clear line."""
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, **trainer_load_options())
    except Exception as error:
        diverged = error if isinstance(error, DivergenceError) else None
        if diverged is None and not weights_are_finite(model):  # e.g. NaN weights break a sampler first
            last_good = newest_checkpoint(output_dir)
            diverged = DivergenceError(
                f"training diverged by step {trainer.global_step} (the weights are not finite; the step failed with "
                f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); last good "
                f"checkpoint: {last_good or 'none'}; lower the learning rate")
        if diverged is None:
            raise
        if trainer.is_global_zero:
            status: dict[str, Any] = scalar_metrics(trainer.callback_metrics)
            write_metrics({**status, "status": "diverged", "error": str(diverged),
                           "diverged_at_step": float(trainer.global_step)}, output_dir)
        if diverged is error:
            raise
        raise diverged from error


def print_summary(model: Any, trainer: pl.Trainer, metrics: dict[str, float], output_dir: str) -> None:
    """A few lines a person reads first: where the run is, the headline numbers, where the pictures are."""
    lines = [f"output directory: {output_dir}", f"metrics: {Path(output_dir) / 'metrics.json'}"]
    if isinstance(model, BaseModule):
        lines += model.summary_lines(metrics)
    for callback in trainer.callbacks:
        if isinstance(callback, ReportingCallback):
            lines += callback.summary_lines(metrics)
    for callback in trainer.callbacks:
        if isinstance(callback, ArtifactCallback) and callback.last_path:
            lines.append(f"{callback.label}: {callback.last_path}")
    text = "\n".join(["", "=" * 72, *lines, "=" * 72])
    print(text)
    for handler in log.root.handlers:  # also into <run>/train.log (the console already has it)
        if isinstance(handler, logging.FileHandler):
            handler.stream.write(text + "\n")
            handler.flush()


def sweep_objective(cfg: DictConfig) -> list[str]:
    """The metric(s) ``optimized_metric`` names, checked before anything runs: a search chooses on validation only
    (``val/*``, ``train/*``), never on the split that is reported (``test/*``)."""
    names = cfg.get("optimized_metric")
    if not names:
        return []
    names = [names] if isinstance(names, str) else list(names)
    chosen_on_test = [n for n in names if str(n).startswith("test/")]
    if chosen_on_test:
        raise ConfigError(f"optimized_metric {chosen_on_test[0]} is a test metric: a search must optimise a "
                          "validation metric (val/...); test/* is reported once, at the end")
    return [str(n) for n in names]


def objective_value(metrics: dict[str, float], names: list[str]) -> float | list[float] | None:
    """What a Hydra sweeper receives: one float, or one per objective (Optuna's multi-objective directions)."""
    if not names:
        return None
    missing = [n for n in names if n not in metrics]
    if missing:
        logged = ", ".join(sorted(k for k in metrics if k.startswith("val/"))) or "none"
        raise ConfigError(f"optimized_metric {missing[0]} was not logged by this run (validation metrics logged: "
                          f"{logged})")
    values = [metrics[n] for n in names]
    return values[0] if len(values) == 1 else values


def failed_trial(cfg: DictConfig, names: list[str], error: BaseException) -> float | list[float]:
    """A search trial that diverged or failed: its ``metrics.json`` says so and the sweeper gets NaN, which Optuna
    records as a failed trial, so the search goes on (a plain run raises instead)."""
    output_dir = cfg.paths.output_dir
    log.exception(f"[contrastlab] trial failed ({type(error).__name__}: {error}); NaN returned to the sweeper")
    metrics_file = Path(output_dir) / "metrics.json"
    if not metrics_file.exists():  # a divergence already wrote its status
        write_metrics({"status": "failed", "error": f"{type(error).__name__}: {error}"}, output_dir)
    nan = float("nan")
    return nan if len(names) == 1 else [nan] * len(names)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | list[float] | None:
    objective = sweep_objective(cfg)
    with run_context(cfg.paths.output_dir):
        try:
            metrics = train(cfg)
        except Exception as error:
            if not (objective and is_multirun()):
                raise
            return failed_trial(cfg, objective, error)
    return objective_value(metrics, objective)


if __name__ == "__main__":
    main()
