"""What every method module shares: optimiser from a Hydra partial, named schedule sized from the run's real
step budget, parameter groups, and the public surface callbacks talk to.

The surface (a method implements what its paper gives it; ``supports(name)`` says which):

- ``embed(images) -> (B, D)``: unit-norm representations (kNN / probes / clustering / disentanglement callbacks);
- ``restore(images, with_rain) -> {"background": ..., "rain": ...}``: image restoration (deraining grids);
- ``translate(content_images, domains) -> (B, D, 3, H, W)``: every image rendered in every domain (translation
  grid);
- ``summary_lines(metrics) -> list[str]``: the headline of the metrics the module logs itself, read at the end of
  ``train.py`` (metrics an evaluation callback computes are summarised by that callback, a ``ReportingCallback``).

A callback asks once, at setup, through ``require(pl_module, capability, needed_by)``: a missing capability
stops with one line naming the method, the capability and the callback instead of silently skipping work.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.optim import Optimizer

from contrastlab.errors import ConfigError
from lightning_modules.components.distributed import average_batchnorm_statistics
from lightning_modules.components.schedules import build_scheduler

OptimizerFactory = Callable[..., Optimizer]


class BaseModule(pl.LightningModule):
    """Base for the method modules.

    Args:
        optimizer: a partially applied optimiser (Hydra ``_partial_: true``); called with parameter groups.
        scheduler: ``{"name": ..., **options}`` for ``build_scheduler``; None = constant.
        channels_last: run convolutions in channels-last memory format (faster with AMP on tensor cores).
        compile: ``torch.compile`` the networks named in ``compile_targets`` in place (parameter names, hence
            checkpoints, unchanged); pays off on GPUs after the first, slower steps.
    """

    compile_targets: tuple[str, ...] = ()
    # True for methods whose step runs several backward passes over different parameters (NLCL: D step, G step):
    # train.py / eval.py then configure DDP with unused-parameter detection (plain DDP is cheaper otherwise).
    ddp_find_unused_parameters: bool = False
    # False for methods whose buffers every rank computes identically (MoCo's queue of gathered keys, HCSC's
    # prototype hierarchy): DDP then does not re-send all buffers from rank 0 before every forward (66 MB a step
    # for HCSC on ImageNet). Training-mode BatchNorm is unaffected; the ranks' running statistics are averaged
    # before every evaluation and clustering pass (``average_batchnorm_statistics``).
    ddp_broadcast_buffers: bool = True

    def __init__(
        self,
        optimizer: OptimizerFactory | None = None,
        scheduler: dict[str, Any] | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer or functools.partial(torch.optim.Adam, lr=1e-3)
        self.scheduler_config = dict(scheduler) if scheduler else {"name": "constant"}
        self.channels_last, self.compile_networks = channels_last, compile

    # ---- optimisation --------------------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        """Parameter groups handed to the optimiser; methods override to set per-part learning rates."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def steps_per_epoch(self) -> int:
        """Optimisation steps in one epoch (after ``limit_train_batches`` and gradient accumulation)."""
        trainer = self.trainer
        _ = trainer.estimated_stepping_batches  # makes Lightning build the train loader and count its batches
        batches = trainer.num_training_batches
        if batches == float("inf"):
            return 1
        return max(math.ceil(batches / max(trainer.accumulate_grad_batches, 1)), 1)

    def total_iterations(self, optimizer_steps_per_batch: int = 1) -> int:
        """Training iterations (batches) of the whole run, also when ``max_steps`` counts optimiser steps."""
        trainer = self.trainer
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return max(trainer.max_steps // optimizer_steps_per_batch, 1)
        return max(int(trainer.estimated_stepping_batches), 1)

    def make_scheduler(self, optimizer: Optimizer, optimizer_steps_per_batch: int = 1) -> dict[str, Any] | None:
        options = dict(self.scheduler_config)
        name = options.pop("name", "constant")
        total = self.total_iterations(optimizer_steps_per_batch)
        steps_per_epoch = self.steps_per_epoch() if name != "constant" else 1
        scheduler = build_scheduler(optimizer, name, total, steps_per_epoch, **options)
        if scheduler is None:
            return None
        return {"scheduler": scheduler, "interval": "step", "frequency": 1}

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameter_groups())
        scheduler = self.make_scheduler(optimizer)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # ---- memory format -------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.compile_networks:
            for name in self.compile_targets:
                module = getattr(self, name, None)
                if module is not None:
                    module.compile()

    # ---- evaluation under DDP -----------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        average_batchnorm_statistics(self)  # every rank evaluates the same network (DDP leaves BN stats per rank)

    def on_test_epoch_start(self) -> None:
        average_batchnorm_statistics(self)

    def on_predict_epoch_start(self) -> None:
        average_batchnorm_statistics(self)

    def format_input(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    # ---- the surface callbacks use (see the module docstring) ---------------------------------------------------
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm representations of ``images`` (B, D), for the evaluation callbacks."""
        raise NotImplementedError(f"{type(self).__name__} does not implement embed(images)")

    def restore(self, images: torch.Tensor, with_rain: bool = True) -> dict[str, torch.Tensor]:
        """The restored layers of ``images``: ``background`` (and ``rain`` when ``with_rain``)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement restore(images)")

    def translate(self, content_images: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """Every content image rendered in every domain of ``domains``: (B, D, C, H, W)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement translate(images, domains)")

    def summary_lines(self, metrics: dict[str, float]) -> list[str]:
        """The headline of the metrics this module logs itself, printed by ``train.py`` (none by default)."""
        return []

    def supports(self, capability: str) -> bool:
        """Whether this method implements ``capability`` (embed | restore | translate) itself."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}; one of {', '.join(CAPABILITIES)}")
        return any(capability in vars(klass) for klass in type(self).__mro__
                   if issubclass(klass, BaseModule) and klass is not BaseModule)


CAPABILITIES = ("embed", "restore", "translate")


def require(pl_module: pl.LightningModule, capability: str, needed_by: str) -> None:
    """Stop with one line when ``pl_module`` lacks ``capability``, which the callback ``needed_by`` needs."""
    if not isinstance(pl_module, BaseModule) or not pl_module.supports(capability):
        raise ConfigError(f"callback `{needed_by}` needs {type(pl_module).__name__}.{capability}(), which this "
                          f"method does not implement; remove the callback (callbacks.{needed_by}=null) or "
                          f"implement {capability} (docs/extending.md)")


def trainable(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    """All parameters of ``modules`` that require gradients, without duplicates."""
    seen, params = set(), []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params
