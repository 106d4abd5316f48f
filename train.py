"""Train a method: compose the config, seed, instantiate, fit, test, write ``metrics.json``.

    python train.py                                        # the embedded CPU demo (NLCL on synthetic rain)
    python train.py experiment=nlcl_rain100l data.root=../shared/data/rain100l
    python train.py -m experiment=hcsc_cifar model.optimizer.lr=0.03,0.06
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from contrastlab.run import (  # noqa: E402
    instantiate_group,
    instantiate_loggers,
    log_hyperparameters,
    print_config,
    register_resolvers,
    run_context,
    scalar_metrics,
    write_metrics,
)

register_resolvers()
# With OnExceptionCheckpoint, Lightning resumes from the run folder's last.ckpt when there is one (a requeued
# SLURM job, a rerun with hydra.run.dir=<old run>); in a fresh folder it warns that there is none.
warnings.filterwarnings("ignore", message=r".*there is no last checkpoint available.*")
warnings.filterwarnings("ignore", message=r".*ckpt_path=None\)` was called without a model.*")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) the configured model; return the final metrics."""
    output_dir = cfg.paths.output_dir
    if cfg.get("print_config"):
        print_config(cfg, output_dir)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    model: pl.LightningModule = instantiate(cfg.model)
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"), output_dir)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log_hyperparameters(trainer, model, cfg)

    metrics: dict[str, float] = {}
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update(scalar_metrics(trainer.callback_metrics))
    has_test = getattr(datamodule, "has_test_data", lambda: True)()
    if cfg.test and has_test:
        # The final weights are evaluated (the papers select no checkpoint on held-out data).
        ckpt = None if cfg.train else cfg.get("ckpt_path")
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt)
        metrics.update(scalar_metrics(trainer.callback_metrics))

    if trainer.is_global_zero:
        write_metrics(metrics, output_dir)
        print_summary(model, trainer, metrics, output_dir)
    return metrics


def print_summary(model: Any, trainer: pl.Trainer, metrics: dict[str, float], output_dir: str) -> None:
    """A few lines a person reads first: where the run is, the headline numbers, where the pictures are."""
    lines = [f"output directory: {output_dir}", f"metrics: {Path(output_dir) / 'metrics.json'}"]
    summarize = getattr(model, "summary_lines", None)
    if callable(summarize):
        lines += summarize(metrics)
    for callback in trainer.callbacks:
        path = getattr(callback, "last_path", None)
        if path:
            lines.append(f"image grid: {path}")
    print("\n".join(["", "=" * 72, *lines, "=" * 72]))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with run_context(cfg.paths.output_dir):
        metrics = train(cfg)
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    main()
