"""Collectives that work with or without ``torch.distributed`` (one process: identity), so tests run anywhere."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equally shaped tensors of all ranks along dim 0 (rank order), differentiably: the backward
    sums, for each rank's own part, the gradients of every rank's loss (``torch.distributed.nn``)."""
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()))


@torch.no_grad()
def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equally shaped tensors of all ranks along dim 0 (rank order); no gradient."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def gather_variable(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate tensors whose first dimension differs between ranks (shards of uneven size)."""
    if not is_distributed():
        return tensor
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = gather(size).tolist()
    padded = torch.zeros((max(sizes), *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    parts = gather(padded)
    return torch.cat([parts[r * max(sizes): r * max(sizes) + n] for r, n in enumerate(sizes)])


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place; returns the tensor."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    if is_distributed():
        dist.broadcast(tensor, src)
    return tensor


@torch.no_grad()
def average_batchnorm_statistics(module: torch.nn.Module) -> int:
    """Average the BatchNorm running means and variances over ranks, in place; returns how many layers.

    Each DDP rank updates its BN buffers from its own shard, so after training they differ between ranks while
    the weights agree. Evaluating (kNN, clustering, probes, test metrics) with the averaged statistics makes every
    rank embed with the same network, so a 2-process evaluation equals a 1-process one on those weights.
    """
    layers = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
              and m.track_running_stats and m.running_mean is not None]
    if not is_distributed() or not layers:
        return len(layers)
    flat = torch.cat([torch.cat((m.running_mean.float(), m.running_var.float())) for m in layers])
    all_reduce_sum(flat).div_(world_size())
    offset = 0
    for m in layers:
        n = m.running_mean.numel()
        m.running_mean.copy_(flat[offset:offset + n])
        m.running_var.copy_(flat[offset + n:offset + 2 * n])
        offset += 2 * n
    return len(layers)
