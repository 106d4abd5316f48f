"""Evaluate a checkpoint on the test split, or predict on a folder of images.

    python eval.py experiment=nlcl_rain100l data.root=../shared/data/rain100l ckpt_path=<run>/checkpoints/last.ckpt
    python eval.py experiment=nlcl_official mode=predict data.predict_dir=<rainy folder>   # released weights
    python eval.py mode=export ckpt_path=<checkpoint> export.format=torchvision|detectron2 export.arch=resnet50
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from callbacks.base import ArtifactCallback  # noqa: E402
from contrastlab.checkpoints import load_checkpoint, trainer_load_options, trust_checkpoints  # noqa: E402
from contrastlab.errors import CheckpointError, ConfigError, report_user_errors  # noqa: E402
from contrastlab.export import export_trunk  # noqa: E402
from contrastlab.run import (  # noqa: E402
    instantiate_group,
    instantiate_loggers,
    register_resolvers,
    run_context,
    scalar_metrics,
    trainer_strategy,
    write_metrics,
)

register_resolvers()


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run ``trainer.test`` (mode=test), ``trainer.predict`` (mode=predict) or write the trunk in another layout
    (mode=export); write ``metrics.json``."""
    if cfg.mode not in ("test", "predict", "export"):
        raise ConfigError(f"`mode` must be test, predict or export, got {cfg.mode!r}")
    trust_checkpoints(cfg.get("trust_checkpoint", False))
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise CheckpointError(f"checkpoint '{ckpt_path}' does not exist (config key `ckpt_path`)")
    if cfg.mode == "export":
        if not ckpt_path:
            raise ConfigError("`mode=export` needs `ckpt_path` (a pretraining run's checkpoint or a released one)")
        target = export_trunk(ckpt_path, cfg.export.format, cfg.export.arch, Path(cfg.paths.output_dir) / "export",
                              cfg.export.num_classes, cfg.seed)
        metrics = {"export/bytes": float(target.stat().st_size)}
        write_metrics(metrics, cfg.paths.output_dir)
        return metrics
    if ckpt_path:
        load_checkpoint(ckpt_path, "ckpt_path")  # an untrusted pickle stops here in one line, before any set-up
    pl.seed_everything(cfg.seed, workers=True)
    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    model: pl.LightningModule = instantiate(cfg.model)
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"), cfg.paths.output_dir)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                      strategy=trainer_strategy(cfg.trainer.get("strategy", "auto"), model))

    metrics: dict[str, float] = {}
    if cfg.mode == "test":
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, **trainer_load_options())
        metrics = scalar_metrics(trainer.callback_metrics)
    else:
        trainer.predict(model, datamodule=datamodule, ckpt_path=ckpt_path, return_predictions=False,
                        **trainer_load_options())
        written = [p for c in trainer.callbacks if isinstance(c, ArtifactCallback) for p in c.written]
        metrics = {"predict/images": float(len(written))}
        for callback in trainer.callbacks:  # e.g. no-reference quality of the outputs (callbacks.noreference)
            metrics.update(getattr(callback, "predict_metrics", {}))
        if written and trainer.is_global_zero:
            print(f"wrote {len(written)} images to {written[0].parent}")
    if trainer.is_global_zero:
        write_metrics(metrics, cfg.paths.output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    with run_context(cfg.paths.output_dir):
        evaluate(cfg)


if __name__ == "__main__":
    main()
