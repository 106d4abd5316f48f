"""HCSC: Hierarchical Contrastive Selective Coding (Guo et al., CVPR 2022), on top of MoCo v2.

E-step, at the start of every epoch after ``warmup_epochs`` (HCSC Sec. 3.2; docs/references.md, H1):
    features of every training image (momentum encoder, centre crops, 128-d, unit norm)
    -> k-means 3000 -> 2000 -> 1000 (upper levels cluster the prototypes below; by default the official faiss
       rule: L2 on the unit-norm features, raw centroids, phi from the distances; ``kmeans_metric: spherical``)
    -> prototypes c^l, concentrations phi^l, labels a_l(i), parent probabilities.
Training step (HCSC Sec. 3.3, Eq. 4-8; docs/references.md, H2):
    L_ins   = sum_l CE([q.k, (q.n_j) s^l_ij] / t),     s^l_ij ~ Bernoulli(1 - P_l(a_l(i) | n_j))
    L_proto = mean_l CE([q.c_a / phi_a, (q.c_m / phi_m) t^l_im]),  t^l_im ~ Bernoulli(1 - P(par(a_l(i)) | c_m)),
              negatives = prototypes that are no sample's positive in the local batch, no selection at the top
    L = L_ins + L_proto (+ the same terms for each local view in multi-crop)
During warm-up the step is plain MoCo v2 (plus local InfoNCE for multi-crop).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lightning_modules.components.backbones import Backbone
from lightning_modules.components.distributed import average_batchnorm_statistics, gather
from lightning_modules.components.kmeans import hierarchical_kmeans
from lightning_modules.components.numerics import full_precision
from lightning_modules.hcsc.losses import SelectiveInstanceLoss, SelectivePrototypeLoss
from lightning_modules.hcsc.prototypes import PrototypeHierarchy
from lightning_modules.hcsc.selection import (
    draw_keep_mask,
    instance_keep_probability,
    prototype_candidates,
    prototype_keep_probability,
    queue_log_normaliser,
)
from lightning_modules.moco.losses import Masking
from lightning_modules.moco.module import MoCoV2


class HCSC(MoCoV2):
    """HCSC with code-faithful defaults (gyfastas/HCSC @ cec852d) and switches for the variants
    in docs/references.md, H3.

    Args:
        num_clusters: prototypes per level, bottom-up (3000, 2000, 1000 on ImageNet; scale down for small data).
        warmup_epochs: epochs of plain MoCo v2 before the first clustering (20; 80 for 800-epoch runs).
        instance_selection / prototype_selection: the two selective-coding mechanisms (both on).
        selection_on_local: local views reuse the global query's instance masks (multi-crop configs: on).
        masking: ``zero`` (official: deselected logits become 0) or ``exclude`` (-inf, true removal).
        instance_reduction: ``sum`` (official: the instance loss is summed over levels) or ``mean``.
        exclude_last_prototype: reproduce the official ``range(max())`` off-by-one (never the last id as a
            negative). Off by default: a bug with negligible effect, fixed.
        kmeans_iterations / kmeans_restarts / kmeans_seed: k-means settings (faiss: 20 iterations, 5 restarts,
            per-level seeds 0, 1, 2 = ``kmeans_seed + level``).
        kmeans_metric: ``euclidean`` (official: faiss L2 k-means, raw centroids, phi from the distances to them) or
            ``spherical`` (cosine to normalised centroids, phi to the members' mean).
        kmeans_tol: stop a k-means run once its objective moves by less than this fraction (None: the official
            fixed number of iterations).
        concentration_temperature: the mean of phi at every level (0.2).
        cluster_in_fp32: embed the clustering features with autocast off, as the official fp32 code (default);
            false: under the run's autocast (bf16 / fp16), faster on GPUs, features rounded before k-means.
        backbone, **moco: MoCo v2's arguments (projection_hidden, projection_dim, queue_size, momentum,
            temperature, shuffle_bn, bn_splits, optimizer, scheduler, channels_last, compile), passed on unchanged
            with ``MoCoV2``'s defaults (see its docstring): one list of them, not two that could drift apart.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_clusters: Sequence[int] = (3000, 2000, 1000),
        warmup_epochs: int = 20,
        instance_selection: bool = True,
        prototype_selection: bool = True,
        selection_on_local: bool = True,
        masking: Masking = "zero",
        instance_reduction: str = "sum",
        exclude_last_prototype: bool = False,
        kmeans_iterations: int = 20,
        kmeans_restarts: int = 5,
        kmeans_seed: int = 0,
        kmeans_metric: str = "euclidean",
        kmeans_tol: float | None = None,
        concentration_temperature: float = 0.2,
        cluster_in_fp32: bool = True,
        **moco: Any,
    ) -> None:
        super().__init__(backbone, **moco)
        self.save_hyperparameters(ignore=["backbone", "optimizer"], logger=False)
        self.instance_criterion = SelectiveInstanceLoss(self.temperature, masking, instance_reduction)  # Eq. 5-6
        self.prototype_criterion = SelectivePrototypeLoss(masking)  # Eq. 7-8
        self.num_clusters = list(num_clusters)
        self.hierarchy = PrototypeHierarchy(len(self.num_clusters))
        # Per level, log sum_m exp(n_j . c_m / phi_m) of every queue item: a cache (rebuilt from the queue and
        # prototypes when missing), updated for the new keys only, so a step costs B x M instead of K x M.
        self._queue_normalisers: list[torch.Tensor] | None = None

    # ---- E-step --------------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        if self.current_epoch >= self.hparams.warmup_epochs:
            average_batchnorm_statistics(self)  # every rank's shard is embedded by the same momentum encoder
            self.update_prototypes()

    @torch.no_grad()
    def extract_projections(self, loader: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Momentum-encoder projections (eval mode, unit norm) of this rank's shard, with dataset indices."""
        was_training = self.encoder_k.training
        self.encoder_k.eval()
        features, indices = [], []
        for batch in loader:
            images = batch["image"].to(self.device, non_blocking=True)
            context = (full_precision(self.device) if self.hparams.get("cluster_in_fp32", True)
                       else self.trainer.precision_plugin.forward_context())  # the run's autocast, if any
            with context:
                projection = self.encoder_k(self.format_input(images))[1]
            features.append(F.normalize(projection.float(), dim=1))
            indices.append(batch["index"].to(self.device))
        self.encoder_k.train(was_training)
        return torch.cat(features), torch.cat(indices)

    def update_prototypes(self) -> None:
        """Cluster the whole training set with every rank working on its own shard (docs/references.md, H5)."""
        loader = self.trainer.datamodule.feature_dataloader("train")
        start = time.perf_counter()
        features, indices = self.extract_projections(loader)
        extracted = time.perf_counter()
        hp = self.hparams
        levels = hierarchical_kmeans(features, self.num_clusters, hp.concentration_temperature, hp.kmeans_iterations,
                                     hp.kmeans_restarts, hp.kmeans_seed, distributed=True,
                                     metric=hp.get("kmeans_metric", "euclidean"), tol=hp.get("kmeans_tol"))
        self.hierarchy.update(levels, indices, len(loader.dataset))
        self._queue_normalisers = None  # new prototypes: rebuilt from the whole queue at the next step
        done = time.perf_counter()
        logs = {"cluster/extract_seconds": extracted - start, "cluster/kmeans_seconds": done - extracted}
        for level in range(len(levels)):
            sizes = torch.bincount(self.hierarchy.assignments(level), minlength=self.num_clusters[level])
            logs[f"cluster/nonempty_{level}"] = float((sizes > 0).sum())
        self.log_dict(logs, on_step=False, on_epoch=True, rank_zero_only=True)

    # ---- M-step --------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if not self.hierarchy.ready:
            return super().training_step(batch, batch_idx)
        views = batch["views"]
        q, k = self.query(views[0]), self.key(views[1])
        queue = self.queue.snapshot()
        labels = self.hierarchy.labels(batch["index"])
        normalisers = self.queue_normalisers() if self.hparams.instance_selection else None
        instance, keep_masks, keep_ratio = self.selective_instance_loss(q, k, queue, labels, None, normalisers)
        proto, proto_keep_ratio = self.selective_prototype_loss(q, labels)
        loss = instance + proto
        for local in views[2:]:  # multi-crop: local queries against the same key, queue and prototypes
            q_local = self.query(local)
            if self.hparams.selection_on_local:  # reuse the global query's masks: L levels of CE per view
                loss = loss + self.selective_instance_loss(q_local, k, queue, labels, keep_masks)[0]
            else:  # official without the flag: one unselected InfoNCE per view
                loss = loss + self.instance_loss(q_local, k, queue)[0]
            loss = loss + self.selective_prototype_loss(q_local, labels)[0]
        start = self.queue.pointer.clone()
        keys = gather(k)
        self.queue.enqueue(keys)
        self.update_queue_normalisers(start, keys.shape[0])
        self.log_dict({"train/loss": loss.detach(), "train/instance": instance.detach(), "train/proto": proto.detach(),
                       "train/instance_keep": keep_ratio, "train/proto_keep": proto_keep_ratio},
                      prog_bar=True, batch_size=q.shape[0])
        return loss

    def selective_instance_loss(
        self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, labels: list[torch.Tensor],
        masks: list[torch.Tensor] | None = None, normalisers: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Instance contrast with negative selection at every level; returns loss, the masks, the keep ratio.

        ``masks`` (one per level) are reused instead of drawn: the local views of multi-crop. ``normalisers``
        (``queue_normalisers()``, valid for ``queue``) spare the full posterior over the prototypes.
        """
        if not self.hparams.instance_selection:
            return self.instance_loss(q, k, queue)[0], [], q.new_ones(())
        if masks is None:
            masks = [draw_keep_mask(instance_keep_probability(
                queue, self.hierarchy.centroids(level), self.hierarchy.concentration(level), level_labels,
                normalisers[level] if normalisers else None)) for level, level_labels in enumerate(labels)]
        loss = self.instance_criterion(q, k, queue, masks)
        return loss, list(masks), torch.stack([m.float().mean() for m in masks]).mean()

    def queue_normalisers(self) -> list[torch.Tensor]:
        """The per-level normalisers of the queue as it stands, computed in full when missing."""
        keys = self.queue.keys
        if self._queue_normalisers is None or self._queue_normalisers[0].device != keys.device:
            self._queue_normalisers = [
                queue_log_normaliser(keys, self.hierarchy.centroids(level), self.hierarchy.concentration(level))
                for level in range(self.hierarchy.num_levels)]
        return self._queue_normalisers

    @torch.no_grad()
    def update_queue_normalisers(self, start: torch.Tensor, count: int) -> None:
        """After an enqueue of ``count`` keys at ``start``: the normalisers of those queue rows only."""
        if self._queue_normalisers is None:
            return
        rows = (start + torch.arange(count, device=start.device)) % self.queue.size
        keys = self.queue.keys[rows]
        for level, normaliser in enumerate(self._queue_normalisers):
            normaliser[rows] = queue_log_normaliser(keys, self.hierarchy.centroids(level),
                                                    self.hierarchy.concentration(level))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._queue_normalisers = None  # the restored queue and prototypes: rebuilt at the first step

    def selective_prototype_loss(
        self, q: torch.Tensor, labels: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prototype contrast with prototype selection below the top level; mean over levels, and the keep ratio."""
        kept, offered = q.new_zeros(()), q.new_zeros(())
        top = self.hierarchy.num_levels - 1
        centroids, concentrations, candidates, masks = [], [], [], []
        for level, level_labels in enumerate(labels):
            centroids.append(self.hierarchy.centroids(level))
            concentrations.append(self.hierarchy.concentration(level))
            limit = int(self.hierarchy.limit(level)) if self.hparams.exclude_last_prototype else None
            candidates.append(prototype_candidates(level_labels, centroids[-1].shape[0], limit))
            keep = None
            if self.hparams.prototype_selection and level < top:
                probability = prototype_keep_probability(self.hierarchy.parent_probability(level), labels[level + 1])
                keep = draw_keep_mask(probability)
                kept = kept + (keep & candidates[-1]).sum()  # masked sums: no data-dependent shapes, no host sync
                offered = offered + candidates[-1].sum() * keep.shape[0]
            masks.append(keep)
        loss = self.prototype_criterion(q, labels, centroids, concentrations, candidates, masks)
        ratio = kept / offered.clamp_min(1) if self.hparams.prototype_selection else q.new_ones(())
        return loss, ratio
