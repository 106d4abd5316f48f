"""Precision helpers for loss computations."""

from __future__ import annotations

import torch


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
