"""Learning-rate schedules by name, sized from the real step budget of the run.

Each is a ``LambdaLR`` with a small callable (picklable, re-created on resume; the step count itself is restored
from the checkpoint).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


@dataclass
class ConstantThenLinear:
    """Factor 1 for the first ``total - decay`` units, then linear to ``final_factor`` at the last unit.

    The official NLCL / CUT 'linear' policy steps once an epoch (``unit_steps`` = the epoch's steps): 200 constant
    epochs, then 10/11, 9/11, ..., 1/11 over the 10 decaying epochs (mean 0.5 of the base rate there). With
    ``unit_steps`` = 1 the factor falls every step instead (a smooth variant, mean about 0.55 in the decay).
    """

    total_steps: int
    decay_steps: int
    final_factor: float
    unit_steps: int = 1

    def __call__(self, step: int) -> float:
        unit = step // self.unit_steps
        start = self.total_steps - self.decay_steps
        if unit < start or self.decay_steps <= 0:
            return 1.0
        progress = min((unit - start + 1) / self.decay_steps, 1.0)
        return 1.0 - (1.0 - self.final_factor) * progress


@dataclass
class WarmupCosine:
    """Linear warm-up over ``warmup`` units, then half-cosine from 1 to ``final_factor`` at ``total``.

    With ``unit_steps`` > 1 the factor only changes at multiples of it (epoch-wise cosine, as MoCo/HCSC).
    """

    total: int
    warmup: int = 0
    final_factor: float = 0.0
    unit_steps: int = 1

    def __call__(self, step: int) -> float:
        unit = step // self.unit_steps
        if unit < self.warmup:
            return (unit + 1) / (self.warmup + 1)
        progress = min((unit - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        return self.final_factor + (1.0 - self.final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class CosineRestarts:
    """Half-cosine from 1 to 0 over every ``period`` steps, then back to 1 (``CosineAnnealingWarmRestarts`` with
    T_mult 1, eta_min 0, stepped per iteration as HCSC's Places205 protocol)."""

    period: int

    def __call__(self, step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * (step % self.period) / self.period))


@dataclass
class MultiStep:
    """Multiply by ``gamma`` at each milestone (in steps)."""

    milestones: Sequence[int]
    gamma: float

    def __call__(self, step: int) -> float:
        return self.gamma ** sum(step >= m for m in self.milestones)


def build_scheduler(
    optimizer: Optimizer,
    name: str,
    total_steps: int,
    steps_per_epoch: int,
    **options: float | int | Sequence[int] | None,
) -> LambdaLR | None:
    """A per-step ``LambdaLR`` for the named schedule, or None for ``constant``.

    Names and options:
        ``constant``.
        ``constant_then_linear``: ``decay_fraction`` (of all steps) or ``decay_epochs``; ``final_factor``;
            ``per_epoch`` (True = the factor changes once an epoch, as the official NLCL / CUT code).
        ``cosine``: ``warmup_epochs``, ``final_factor``, ``per_epoch`` (True = the factor changes once an epoch).
        ``step``: ``step_epochs``, ``gamma`` (DCoDR: StepLR every 30 epochs, gamma 0.33, stepped per batch).
        ``multistep``: ``milestone_epochs``, ``gamma``.
        ``cosine_restarts``: ``period_epochs`` (a half-cosine over each period, then a restart).
    """
    steps_per_epoch = max(int(steps_per_epoch), 1)
    total_steps = max(int(total_steps), 1)
    if name == "constant":
        return None
    if name == "constant_then_linear":
        unit = steps_per_epoch if options.get("per_epoch") else 1
        total = math.ceil(total_steps / unit)
        if options.get("decay_epochs") is not None:
            decay = int(options["decay_epochs"]) * steps_per_epoch // unit
        else:
            decay = round(float(options.get("decay_fraction", 0.05)) * total)
        rule = ConstantThenLinear(total, decay, float(options.get("final_factor", 0.0)), unit)
    elif name == "cosine":
        per_epoch = bool(options.get("per_epoch", False))
        unit = steps_per_epoch if per_epoch else 1
        warmup = int(options.get("warmup_epochs", 0) or 0) * (1 if per_epoch else steps_per_epoch)
        total = math.ceil(total_steps / unit)
        rule = WarmupCosine(total, warmup, float(options.get("final_factor", 0.0)), unit)
    elif name == "step":
        step = int(options.get("step_epochs", 30)) * steps_per_epoch
        rule = MultiStep(list(range(step, total_steps + 1, step)), float(options.get("gamma", 0.1)))
    elif name == "multistep":
        epochs = options.get("milestone_epochs") or []
        rule = MultiStep([int(e) * steps_per_epoch for e in epochs], float(options.get("gamma", 0.1)))
    elif name == "cosine_restarts":
        rule = CosineRestarts(max(int(options.get("period_epochs", 10)) * steps_per_epoch, 1))
    else:
        raise ValueError(f"unknown schedule {name!r}: constant, constant_then_linear, cosine, step, multistep, "
                         "cosine_restarts")
    return LambdaLR(optimizer, rule)
