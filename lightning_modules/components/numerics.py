"""Precision helpers for loss computations."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)


def fp32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors are promoted to fp32 (logits and softmax never run in bf16/fp16); fp32 and fp64
    pass unchanged (fp64 keeps gradient checks exact)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def full_precision(device: torch.device | str) -> torch.autocast:
    """A region where autocast is off, whatever precision plugin is active: metrics (SSIM's Gaussian
    convolution, kNN similarities, probes) are computed in fp32 even inside a bf16-mixed ``test_step``."""
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type if device_type in ("cuda", "cpu", "xpu", "mps") else "cpu",
                          enabled=False)


def fp32_region(function: F) -> F:
    """Run ``function`` with autocast off on the device of its first tensor argument.

    Casting the operands to fp32 is not enough under autocast: ``mm`` / ``bmm`` / ``matmul`` are on autocast's
    lower-precision list (CUDA and CPU alike), so ``fp32(q) @ fp32(k).T`` would still run in bf16. Every loss
    forms its similarities, logits and softmax inside this region, from operands it casts with ``fp32``.
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        device = next((a.device for a in itertools.chain(args, kwargs.values()) if isinstance(a, torch.Tensor)),
                      None)
        if device is None:
            return function(*args, **kwargs)
        with full_precision(device):
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
