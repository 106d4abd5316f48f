"""Bodies of the two-process (gloo) tests; run with torch.multiprocessing.spawn, results saved per rank."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def init(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)


def finish() -> None:
    """Leave together, then exit at once. The results are already on disk; a normal interpreter exit runs the C++
    teardown in which a still-joinable gloo thread can abort the process ('terminate called without an active
    exception', a SIGABRT of one spawned process, seen in about 1 of 3 full-suite runs)."""
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class TinyBackbone(nn.Module):
    """A BN-free trunk so that per-rank and global batches give identical gradients."""

    feature_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 6), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_moco():
    from lightning_modules.moco.module import MoCoV2

    torch.manual_seed(0)
    return MoCoV2(TinyBackbone(), projection_hidden=8, projection_dim=4, queue_size=8, momentum=0.9,
                  temperature=0.2, shuffle_bn=True)


def shared_data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    return {
        "x_q": torch.randn(4, 3, 4, 4, generator=g), "x_k": torch.randn(4, 3, 4, 4, generator=g),
        "features": F.normalize(torch.randn(60, 5, generator=g), dim=1),
        "bank": F.normalize(torch.randn(30, 5, generator=g), dim=1),
        "bank_labels": torch.randint(0, 3, (30,), generator=g),
        "queries": F.normalize(torch.randn(11, 5, generator=g), dim=1),
        "query_labels": torch.randint(0, 3, (11,), generator=g),
    }


def moco_and_queue(rank: int, world: int, port: int, out: str) -> None:
    """Gradients of the MoCo loss under DDP, the keys (shuffle-BN path), the queue after a gathered enqueue."""
    init(rank, world, port)
    from lightning_modules.components.distributed import gather

    data = shared_data()
    model = build_moco()
    ddp = nn.parallel.DistributedDataParallel(model.encoder_q)
    local = slice(rank * 2, rank * 2 + 2)
    q = F.normalize(ddp(data["x_q"][local])[1], dim=1)
    k = model.key(data["x_k"][local])
    loss, _ = model.instance_loss(q, k, model.queue.snapshot())
    loss.backward()
    model.queue.enqueue(gather(k))
    grads = {n: p.grad.clone() for n, p in model.encoder_q.named_parameters()}
    torch.save({"grads": grads, "k": k, "queue": model.queue.keys.clone(), "pointer": model.queue.pointer.clone()},
               Path(out) / f"moco{rank}.pt")
    del ddp  # its reducer holds gloo work: release it before the process group goes
    finish()


def clustering_and_knn(rank: int, world: int, port: int, out: str) -> None:
    """k-means on shards, the prototype state assembled from strided indices, kNN on sharded queries."""
    init(rank, world, port)
    from callbacks.representation_eval import RepresentationEvaluation
    from lightning_modules.components.distributed import gather_variable
    from lightning_modules.components.kmeans import hierarchical_kmeans
    from lightning_modules.hcsc.prototypes import PrototypeHierarchy

    data = shared_data()
    half = data["features"].shape[0] // world
    shard = data["features"][rank * half:(rank + 1) * half]
    levels = hierarchical_kmeans(shard, [6, 3], iterations=8, restarts=2, seed=1, distributed=True)
    hierarchy = PrototypeHierarchy(2)
    indices = torch.arange(rank * half, (rank + 1) * half)
    hierarchy.update(levels, indices, data["features"].shape[0], distributed=True)
    evaluation = RepresentationEvaluation(knn_k=[3, 10])
    queries = data["queries"][rank::world]
    labels = data["query_labels"][rank::world]
    # Each rank holds a strided shard of the bank (as embed_loader leaves it) and its own queries.
    knn = evaluation._knn(None, data["bank"][rank::world], data["bank_labels"][rank::world], queries, labels, 3,
                          "val")
    clusters = RepresentationEvaluation(cluster_k=[3, 5], cluster_split="train")._cluster_scores(
        data["bank"][rank * 15:(rank + 1) * 15], data["bank_labels"][rank * 15:(rank + 1) * 15], 3, sharded=True)
    torch.save({"assignments": torch.cat([gather_variable(lvl.assignments) for lvl in levels[:1]]),
                "clusters": clusters,
                "centroids": [lvl.centroids for lvl in levels], "phi": [lvl.concentration for lvl in levels],
                "hierarchy": hierarchy.state_dict(), "knn": knn}, Path(out) / f"cluster{rank}.pt")
    finish()


class BNTrunk(nn.Module):
    """A trunk with BatchNorm whose running statistics each rank sets differently, as a DDP epoch leaves them."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 5))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


def rank_statistics(model: BNTrunk, rank: int) -> None:
    bn = model.net[1]
    g = torch.Generator().manual_seed(100 + rank)
    bn.running_mean.copy_(torch.randn(8, generator=g))
    bn.running_var.copy_(torch.rand(8, generator=g) + 0.5)


def bn_sync_and_knn(rank: int, world: int, port: int, out: str) -> None:
    """Rank-specific BN statistics, averaged before evaluation; kNN of each rank's queries against the sharded bank."""
    init(rank, world, port)
    from callbacks.representation_eval import RepresentationEvaluation
    from lightning_modules.components.distributed import average_batchnorm_statistics

    data = shared_data()
    model = BNTrunk().eval()
    rank_statistics(model, rank)
    average_batchnorm_statistics(model)
    with torch.no_grad():
        bank = model.embed(data["bank"][rank::world])  # this rank's shard, never gathered
        bank_labels = data["bank_labels"][rank::world]
        queries = model.embed(data["queries"][rank::world])
    knn = RepresentationEvaluation(knn_k=[3, 10])._knn(None, bank, bank_labels, queries,
                                                          data["query_labels"][rank::world], 3, "val")
    bn = model.net[1]
    torch.save({"knn": knn, "mean": bn.running_mean.clone(), "var": bn.running_var.clone()},
               Path(out) / f"cluster{rank}.pt")
    finish()


def dcodr_global_batch(rank: int, world: int, port: int, out: str) -> None:
    """Each rank encodes its share of one global batch (every world-th image); the codes are gathered with their
    gradients and the domain-wise loss of the whole batch is backpropagated, then averaged as DDP does."""
    init(rank, world, port)
    import torch.distributed as dist

    from lightning_modules.components.distributed import gather, gather_with_grad
    from lightning_modules.dcodr.losses import DomainContrastiveLoss

    batch = dcodr_batch()
    encoder = torch.nn.Linear(8, 4, bias=False)
    torch.nn.init.normal_(encoder.weight, generator=torch.Generator().manual_seed(0))
    share = slice(rank, None, world)
    z, z_pos = encoder(batch["x"][share]), encoder(batch["x_pos"][share])
    loss = DomainContrastiveLoss(0.2, num_negatives=None)(gather_with_grad(z), gather_with_grad(z_pos),
                                                         gather(batch["domains"][share]))
    loss.backward()
    grad = encoder.weight.grad.clone()
    dist.all_reduce(grad)
    torch.save({"loss": loss.detach(), "grad": grad / world}, Path(out) / f"dcodr{rank}.pt")
    finish()


def dcodr_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return {"x": torch.randn(16, 8, generator=g), "x_pos": torch.randn(16, 8, generator=g),
            "domains": torch.arange(16) % 3}
