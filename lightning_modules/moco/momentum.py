"""MoCo v2 machinery (He et al. 2020, Sec. 3.2; Chen et al. 2020): EMA update, shuffle-BN, the negative queue."""

from __future__ import annotations

import torch
from torch import nn

from lightning_modules.components.distributed import broadcast, gather, is_distributed, rank, world_size


@torch.no_grad()
def ema_update(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """theta_k <- m theta_k + (1 - m) theta_q for every parameter (buffers are the key encoder's own)."""
    target_params = [p.data for p in target.parameters()]
    online_params = [p.data for p in online.parameters()]
    torch._foreach_mul_(target_params, momentum)
    torch._foreach_add_(target_params, online_params, alpha=1.0 - momentum)


@torch.no_grad()
def shuffle_across_ranks(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MoCo's shuffle-BN: each rank receives a random slice of the global batch (None index on one process).

    The key encoder's BN statistics then never come from the same images as the query's, which would let the
    model cheat the pretext task through BN. On one process there is nothing to shuffle across.
    """
    if not is_distributed():
        return x, None
    everything = gather(x)
    permutation = torch.randperm(everything.shape[0], device=x.device)
    broadcast(permutation, src=0)
    local = permutation.view(world_size(), -1)[rank()]
    return everything[local], torch.argsort(permutation)


@torch.no_grad()
def unshuffle_across_ranks(x: torch.Tensor, unshuffle: torch.Tensor | None) -> torch.Tensor:
    if unshuffle is None:
        return x
    everything = gather(x)
    local = unshuffle.view(world_size(), -1)[rank()]
    return everything[local]


class NegativeQueue(nn.Module):
    """A FIFO queue of L2-normalised keys (MoCo), as *persistent* buffers: a resumed run keeps its negatives.

    ``enqueue`` takes the keys of the **global** batch (gather them first) and advances the pointer on the device
    (no host synchronisation).
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and dim must be positive, got {size} x {dim}")
        self.register_buffer("keys", nn.functional.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def snapshot(self) -> torch.Tensor:
        """A copy for this step's logits: ``enqueue`` overwrites the buffer in place before the backward pass."""
        return self.keys.detach().clone()

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    def check_batch(self, global_batch: int) -> None:
        if self.size % global_batch:
            raise ValueError(
                f"queue size {self.size} (`model.queue_size`) is not a multiple of the global batch {global_batch} "
                f"(`data.batch_size` x devices x nodes): the queue would wrap mid-batch"
            )

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        index = (self.pointer + torch.arange(keys.shape[0], device=keys.device)) % self.size
        self.keys.index_copy_(0, index, keys.detach().to(self.keys.dtype))
        self.pointer.add_(keys.shape[0]).remainder_(self.size)
