"""MoCo v2 (Chen et al., 2020, arXiv 2003.04297): the instance-discrimination baseline HCSC builds on.

    q = f_q(x_q) / ||.||,  k = f_k(x_k) / ||.|| (momentum encoder, no gradient),
    L = CE([q.k, q.n_1 ... q.n_K] / t, 0)       (InfoNCE against the queue of earlier keys)
    theta_k <- m theta_k + (1 - m) theta_q;  queue <- queue + all_gather(k)

Under DDP the keys are gathered from every rank before they are enqueued (the queue holds the *global* batch),
and the key encoder uses MoCo's shuffle-BN: the key batch is shuffled across ranks before the forward pass so
that BN statistics are never computed on a query's own key. We keep shuffle-BN rather than SyncBN because it is
what MoCo and the official HCSC do, and it costs one gather of the key images instead of a synchronisation in
every BN layer.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.errors import ConfigError
from datamodules.base import BaseDataModule
from lightning_modules.base import BaseModule, OptimizerFactory
from lightning_modules.components.backbones import Backbone, MLPHead
from lightning_modules.components.distributed import gather
from lightning_modules.components.numerics import full_precision
from lightning_modules.moco.losses import InfoNCELoss
from lightning_modules.moco.momentum import (
    NegativeQueue,
    ema_update,
    shuffle_across_ranks,
    unshuffle_across_ranks,
)


class ProjectedEncoder(nn.Module):
    """Backbone followed by the projection head: returns (features, projection)."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        return features, self.head(features)


class MoCoV2(BaseModule):
    """MoCo v2 with a persistent, globally gathered queue.

    Args:
        backbone: the trunk (ResNet-50 for ImageNet, ResNet-18 with the CIFAR stem for CIFAR).
        projection_hidden / projection_dim: the MLP head (2048 -> 2048 -> 128, no BN).
        queue_size: negatives in the queue (16384); must be a multiple of the global batch.
        momentum: key-encoder EMA coefficient m (0.999).
        temperature: t of the InfoNCE logits (0.2).
        shuffle_bn: shuffle the key batch across ranks (no effect on one process).
        bn_splits: encode the (shuffled) key batch in this many groups, each with its own BatchNorm statistics, so
            that on one device a key is never normalised with the same images as its query (the leak shuffle-BN
            exists to close; MoCo's single-GPU CIFAR demo splits BN the same way). 1: off (multi-GPU runs).
    """

    compile_targets = ("encoder_q", "encoder_k")
    ddp_broadcast_buffers = False  # the queue (gathered keys) and HCSC's hierarchy are identical on every rank

    def __init__(
        self,
        backbone: Backbone,
        projection_hidden: int = 2048,
        projection_dim: int = 128,
        queue_size: int = 16384,
        momentum: float = 0.999,
        temperature: float = 0.2,
        shuffle_bn: bool = True,
        bn_splits: int = 1,
        optimizer: OptimizerFactory | None = None,
        scheduler: dict[str, Any] | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__(optimizer, scheduler, channels_last, compile)
        self.save_hyperparameters(ignore=["backbone", "optimizer"], logger=False)
        self.encoder_q = ProjectedEncoder(backbone, MLPHead(backbone.feature_dim, projection_hidden, projection_dim))
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.encoder_k.requires_grad_(False)
        self.queue = NegativeQueue(queue_size, projection_dim)
        self.infonce = InfoNCELoss(temperature)  # L = CE([q.k, q.n_j] / t, 0), He et al. Eq. 1
        self.temperature, self.momentum = temperature, momentum

    def parameter_groups(self) -> list[dict[str, Any]]:
        # Weight decay on every parameter, BN and biases included (official MoCo / HCSC).
        return [{"params": list(self.encoder_q.parameters())}]

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.trainer.accumulate_grad_batches > 1:
            # The key encoder's EMA and the enqueue run once per batch: with k micro-batches a step the momentum
            # would become 0.999^k and the queue would hold keys of the same step, and lr x batch / 256 ignores k.
            raise ConfigError(f"trainer.accumulate_grad_batches={self.trainer.accumulate_grad_batches} is not "
                              "supported by MoCo v2 / HCSC (momentum update and queue run per batch); use 1 and "
                              "reach the batch with more devices or data.batch_size")
        datamodule = self.trainer.datamodule
        per_device = datamodule.per_device_batch_size() if isinstance(datamodule, BaseDataModule) else None
        if per_device:
            self.queue.check_batch(per_device * self.trainer.world_size)

    # ---- encoders ------------------------------------------------------------------------------------------
    def query(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder_q(self.format_input(images))[1].float(), dim=1)

    @torch.no_grad()
    def key(self, images: torch.Tensor) -> torch.Tensor:
        """Momentum update, then keys of the (shuffled-BN) key encoder; call once per step."""
        ema_update(self.encoder_q, self.encoder_k, self.momentum)
        images, unshuffle = shuffle_across_ranks(self.format_input(images)) if self.hparams.shuffle_bn else (
            self.format_input(images), None)
        keys = F.normalize(self.split_bn_forward(images).float(), dim=1)
        return unshuffle_across_ranks(keys, unshuffle)

    def split_bn_forward(self, images: torch.Tensor) -> torch.Tensor:
        """Key projections, the batch shuffled and encoded in ``bn_splits`` groups (a few groups, not samples)."""
        splits = int(self.hparams.get("bn_splits", 1) or 1)
        if splits <= 1 or images.shape[0] < 2 * splits:
            return self.encoder_k(images)[1]
        order = torch.randperm(images.shape[0], device=images.device)
        keys = torch.cat([self.encoder_k(group)[1] for group in images[order].chunk(splits)])
        return keys[torch.argsort(order)]

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm backbone features of the query encoder (the kNN / probe representation, 2048-d for R50)."""
        return F.normalize(self.encoder_q.backbone(self.format_input(images)).float(), dim=1)

    # ---- training ------------------------------------------------------------------------------------------
    def instance_loss(
        self, q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """InfoNCE of queries ``q`` against their keys ``k`` and the queue's ``negatives``: (loss, accuracy)."""
        return self.infonce(q, k, negatives)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        views = batch["views"]
        if len(views) < 2:
            raise ValueError("MoCo needs a query and a key view: `data.train_views` must give at least two")
        q, k = self.query(views[0]), self.key(views[1])
        negatives = self.queue.snapshot()
        loss, accuracy = self.instance_loss(q, k, negatives)
        for local in views[2:]:  # multi-crop: local views are extra queries against the same key and queue
            loss = loss + self.instance_loss(self.query(local), k, negatives)[0]
        self.queue.enqueue(gather(k))
        self.log_dict({"train/loss": loss.detach(), "train/instance_acc": accuracy}, prog_bar=True,
                      batch_size=q.shape[0])
        return loss

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """Embeddings of the evaluation split; the evaluation callbacks collect them (kNN, probes, clustering).
        Autocast off: the callbacks embed the memory bank outside any autocast, and queries and bank must share
        one precision (else the same weights score differently in val/knn and test/knn under bf16-mixed)."""
        with full_precision(self.device):
            out = {"embedding": self.embed(batch["image"])}
        if "label" in batch:
            out["label"] = batch["label"]
        return out
