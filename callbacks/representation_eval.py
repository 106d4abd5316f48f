"""Representation quality through ``pl_module.embed``: one monitor for MoCo v2, HCSC and DCoDR alike.

During training: weighted kNN of the validation split against the training set (``val/knn_top1`` ...).
After testing: kNN, a linear probe on frozen features and clustering quality (NMI, AMI, Hungarian ACC) of the
test split (``test/knn_top1``, ``test/linear_top1``, ``test/nmi``, ...).

Under DDP every rank embeds its own shard and keeps it: the queries are shared, each rank searches its part of the
memory bank and the per-shard top-k are merged (``sharded_topk``), so the numbers equal the single-process ones
while no rank holds the whole bank (on ImageNet, 1.28M x 2048 fp32 is 10.5 GB). Only the logistic-regression
probe gathers the training features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info

from callbacks.base import ReportingCallback
from callbacks.evaluation.clustering import clustering_scores
from callbacks.evaluation.logistic import logistic_regression_probe
from callbacks.evaluation.neighbours import knn_memory_bytes, knn_vote, sharded_topk
from datamodules.base import BaseDataModule, require_datamodule
from lightning_modules.base import require
from lightning_modules.components.distributed import (
    all_reduce_sum,
    average_batchnorm_statistics,
    gather_variable,
    world_size,
)
from lightning_modules.components.kmeans import spherical_kmeans


@torch.no_grad()
def embed_loader(pl_module: pl.LightningModule, loader: Any,
                 dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Embeddings (in ``dtype``, default as ``embed`` gives them) and labels of this rank's share of ``loader``
    (model in eval mode, restored afterwards)."""
    was_training = pl_module.training
    pl_module.eval()
    features, labels = [], []
    for batch in loader:
        embedding = pl_module.embed(batch["image"].to(pl_module.device, non_blocking=True))
        features.append(embedding.to(dtype) if dtype is not None else embedding)
        if "label" in batch:
            labels.append(torch.as_tensor(batch["label"]).to(pl_module.device))
    pl_module.train(was_training)
    return torch.cat(features), (torch.cat(labels) if labels else None)


class RepresentationEvaluation(ReportingCallback):
    """kNN monitor during training; kNN, linear probe and clustering metrics at test time.

    Args:
        knn_k: neighbourhood sizes; the first is reported as ``knn_top1/top5``, others as ``knn<k>_top1/top5``.
        knn_temperature: weight exp(sim / T) of each neighbour (0.07).
        every_n_epochs: kNN monitoring frequency (0 = never during training).
        logistic_regression: train a logistic regression on the cached frozen features (``test/linear_*``;
            the full linear-evaluation protocol is ``experiment=linear_*``).
        probe_epochs / probe_lr: its schedule.
        clustering: spherical k-means on the embeddings: NMI, AMI, ACC (Hungarian, one cluster per class).
        cluster_k: the numbers of clusters (None: the number of classes). k = classes is logged as ``test/nmi``
            ..., any other k as ``test/nmi_k<k>`` ... (the HCSC README: 25,000 and 1,000 on ImageNet).
        cluster_split: ``test`` (the held-out embeddings) or ``train`` (the training set, k-means distributed
            over the ranks' shards).
        knn_bank_dtype: ``float32`` or ``bfloat16`` / ``float16``: the kNN memory bank (and its similarities) in half
            precision, half the memory (``bench/RESULTS.md``: how often the top-k changes); the probes and
            clustering get fp32 features.
    """

    def __init__(self, knn_k: Sequence[int] = (20, 200), knn_temperature: float = 0.07, every_n_epochs: int = 1,
                 logistic_regression: bool = True, probe_epochs: int = 100, probe_lr: float = 0.1,
                 clustering: bool = True, cluster_k: Sequence[int] | None = None,
                 cluster_split: str = "test", knn_bank_dtype: str = "float32") -> None:
        if cluster_split not in ("test", "train"):
            raise ValueError(f"`cluster_split` must be test or train, got {cluster_split!r}")
        self.knn_k, self.knn_temperature, self.every_n_epochs = list(knn_k), knn_temperature, every_n_epochs
        self.logistic_regression, self.probe_epochs, self.probe_lr = logistic_regression, probe_epochs, probe_lr
        self.clustering, self.cluster_k, self.cluster_split = clustering, cluster_k, cluster_split
        if knn_bank_dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"`knn_bank_dtype` must be float32, bfloat16 or float16, got {knn_bank_dtype!r}")
        self.bank_dtype = getattr(torch, knn_bank_dtype)
        self._memory_reported = False
        self._test: list[tuple[torch.Tensor, torch.Tensor]] = []

    def summary_lines(self, metrics: dict[str, float]) -> list[str]:
        keys = [(f"kNN top-1 (k={self.knn_k[0]})", "test/knn_top1"), ("linear top-1", "test/linear_top1"),
                ("NMI", "test/nmi")]
        shown = [f"{label} {metrics[key]:.4f}" for label, key in keys if key in metrics]
        return ["held-out " + ", ".join(shown)] if shown else []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require(pl_module, "embed", "representation_eval")
        require_datamodule(trainer, BaseDataModule, "representation_eval")

    @staticmethod
    def _num_classes(trainer: pl.Trainer) -> int | None:
        return trainer.datamodule.num_classes

    def _knn(self, pl_module: pl.LightningModule, bank: torch.Tensor, bank_labels: torch.Tensor,
             queries: torch.Tensor, labels: torch.Tensor, num_classes: int, stage: str) -> dict[str, float]:
        """kNN accuracies of every rank's queries against the bank, of which this rank holds ``bank`` (a shard)."""
        queries, labels = gather_variable(queries), gather_variable(labels)
        self._report_memory(bank, queries.shape[0])
        sims, neighbour_labels = sharded_topk(bank, bank_labels, queries, max(self.knn_k))
        all_scores = knn_vote(sims, neighbour_labels, num_classes, self.knn_k, self.knn_temperature)
        out = {}
        for position, k in enumerate(self.knn_k):
            ranked = all_scores[k].argsort(dim=1, descending=True)
            name = "knn" if position == 0 else f"knn{k}"
            count = max(labels.shape[0], 1)
            out[f"{stage}/{name}_top1"] = float((ranked[:, :1] == labels[:, None]).any(1).sum()) / count
            out[f"{stage}/{name}_top5"] = float((ranked[:, :5] == labels[:, None]).any(1).sum()) / count
        return out

    def _report_memory(self, bank: torch.Tensor, queries: int) -> None:
        """Once a run (the same call on every rank): what the monitor holds per rank (``knn_memory_bytes``), beside
        the whole bank."""
        if self._memory_reported:
            return
        self._memory_reported = True
        shard_rows, dim = bank.shape
        rows = all_reduce_sum(torch.tensor([shard_rows], device=bank.device))
        bank_rows = int(rows)
        peak = knn_memory_bytes(shard_rows, queries, dim, max(self.knn_k), world_size(),
                                bank_bytes=bank.element_size()) / 2**20
        whole = 4 * bank_rows * dim / 2**20
        rank_zero_info(f"[contrastlab] kNN monitor: bank {bank_rows} x {dim} in {world_size()} shard(s) of "
                       f"{shard_rows}; peak about {peak:.0f} MB a rank (the whole bank alone: {whole:.0f} MB)")

    def _bank(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's shard of the training features (never gathered for kNN), in ``knn_bank_dtype``."""
        return embed_loader(pl_module, trainer.datamodule.feature_dataloader("train"), self.bank_dtype)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        num_classes = self._num_classes(trainer)
        last = trainer.current_epoch + 1 >= (trainer.max_epochs or 0)
        if not self.every_n_epochs or num_classes is None:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs and not last:
            return
        average_batchnorm_statistics(pl_module)  # the ranks' BN statistics differ after a DDP epoch
        bank, bank_labels = self._bank(trainer, pl_module)
        datamodule = trainer.datamodule
        queries, labels = embed_loader(pl_module, datamodule.feature_dataloader(datamodule.monitor_split()))
        if labels is None:
            return
        metrics = self._knn(pl_module, bank, bank_labels, queries, labels, num_classes, "val")
        pl_module.log_dict(metrics, on_step=False, on_epoch=True)  # identical on every rank (reduced counts)

    def _cluster_scores(self, points: torch.Tensor, labels: torch.Tensor, num_classes: int,
                        sharded: bool) -> dict[str, float]:
        """NMI / AMI / ACC of k-means at every ``cluster_k``; ``sharded``: each rank holds its own part of the points
        (the k-means statistics are all-reduced, the assignments gathered for scoring)."""
        total = int(all_reduce_sum(torch.tensor([points.shape[0]], device=points.device))) if sharded else len(points)
        metrics = {}
        for k in self.cluster_k or [num_classes]:
            if total < k:
                rank_zero_info(f"[contrastlab] clustering at k={k} skipped: only {total} points")
                continue
            clusters = spherical_kmeans(points, k, iterations=50, restarts=3, distributed=sharded)
            assignments = gather_variable(clusters.assignments) if sharded else clusters.assignments
            truth = gather_variable(labels) if sharded else labels
            suffix = "" if k == num_classes else f"_k{k}"
            metrics |= {f"test/{name}{suffix}": value for name, value in clustering_scores(assignments, truth).items()}
        return metrics

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._test = []

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if isinstance(outputs, dict) and "embedding" in outputs and "label" in outputs:
            self._test.append((outputs["embedding"].detach(), torch.as_tensor(outputs["label"]).to(pl_module.device)))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        num_classes = self._num_classes(trainer)
        if num_classes is None:
            rank_zero_info("[contrastlab] unlabeled data: kNN, linear probe and clustering metrics are skipped")
            return
        local = torch.cat([e for e, _ in self._test]) if self._test else torch.zeros(0, 1, device=pl_module.device)
        local_labels = (torch.cat([y for _, y in self._test]) if self._test
                        else torch.zeros(0, dtype=torch.long, device=pl_module.device))
        bank, bank_labels = self._bank(trainer, pl_module)
        metrics = self._knn(pl_module, bank, bank_labels, local, local_labels, num_classes, "test")
        queries, labels = gather_variable(local), gather_variable(local_labels)
        if self.logistic_regression:  # the probe trains on every training feature: gathered here only
            probe = logistic_regression_probe(gather_variable(bank.float()), gather_variable(bank_labels), queries,
                                              labels, num_classes, self.probe_epochs, self.probe_lr)
            metrics.update({"test/linear_top1": probe["top1"], "test/linear_top5": probe["top5"]})
        if self.clustering:
            points, point_labels = (queries, labels) if self.cluster_split == "test" else (bank.float(), bank_labels)
            metrics.update(self._cluster_scores(points, point_labels, num_classes, self.cluster_split == "train"))
        pl_module.log_dict(metrics)  # identical on every rank
        self._test = []
