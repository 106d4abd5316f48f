"""Precision helpers for loss computations."""

from __future__ import annotations

import torch


def fp32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors are promoted to fp32 (logits and softmax never run in bf16/fp16); fp32 and fp64
    pass unchanged (fp64 keeps gradient checks exact)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
