"""Disentanglement evaluation of content codes (DCoDR Sec. 4; docs/references.md, D5), through ``pl_module.embed``.

Invariance: how well the *domain* is predicted from the content code (lower is better; chance is reported).
Informativeness: how well each content factor is predicted (higher is better); a continuous factor (CelebA's
landmarks) is regressed instead, scored by its mean absolute error ``test/<factor>_l1`` (lower is better; the
error of predicting the training median is ``test/<factor>_l1_baseline``). Probes: the paper's MLP with early
stopping (``test/<target>_acc``), a linear probe (``test/<target>_linear_acc``) and 1-nearest-neighbour retrieval
of every test image among all images: exact matches per target (``test/retrieval_<target>_top1``) and the
official score with tolerances and a joint all-factors match (``test/official_retrieval_<factor>``,
``test/official_retrieval_all``; DCoDR ``retrieval_utils.py``). Probes train on the training split's
codes and are scored on the held-out split (``probe_split: train_test``), or, as the official CelebA evaluation,
are fitted and scored on a 70 / 30 split of the held-out codes stratified by domain, domains with a single image
dropped (``probe_split: within_test``). Rank 0 runs the probes; every rank embeds its own shard.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info

from callbacks.base import ReportingCallback
from callbacks.evaluation.logistic import logistic_regression_probe
from callbacks.evaluation.neighbours import retrieval_top1, tolerant_retrieval_top1
from callbacks.evaluation.probes import median_predictor_l1, mlp_probe, mlp_regression_probe, ridge_regression_l1
from datamodules.base import require_datamodule
from datamodules.domains import DomainDataModule
from datamodules.stratify import stratified_split
from lightning_modules.base import require
from lightning_modules.components.distributed import gather_variable


@torch.no_grad()
def embed_domains(pl_module: pl.LightningModule, loader: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Codes and targets (``domain`` and every factor) of this rank's share of ``loader``."""
    was_training = pl_module.training
    pl_module.eval()
    codes, targets = [], {}
    for batch in loader:
        codes.append(pl_module.embed(batch["image"].to(pl_module.device)))
        targets.setdefault("domain", []).append(batch["domain"].to(pl_module.device))
        for name, values in batch["factors"].items():
            targets.setdefault(name, []).append(values.to(pl_module.device))
    pl_module.train(was_training)
    return torch.cat(codes), {k: torch.cat(v) for k, v in targets.items()}


def split_within(codes: torch.Tensor, targets: dict[str, torch.Tensor], fit_fraction: float,
                 seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """The official CelebA probe data: the held-out codes of domains with at least 2 images, split by domain into a
    fitted ``fit_fraction`` and a scored rest (seeded, stratified)."""
    domains = targets["domain"]
    keep = torch.bincount(domains)[domains] >= 2
    codes, targets = codes[keep], {k: v[keep] for k, v in targets.items()}
    fit, score = stratified_split(targets["domain"].cpu().numpy(), codes.shape[0], 1 - fit_fraction, seed, "numpy")
    fit_index, score_index = (torch.as_tensor(i, dtype=torch.long, device=codes.device) for i in (fit, score))
    return (codes[fit_index], {k: v[fit_index] for k, v in targets.items()}, codes[score_index],
            {k: v[score_index] for k, v in targets.items()})


class DisentanglementProbes(ReportingCallback):
    """Args:
        mlp / linear / retrieval: which probes to run.
        mlp_epochs / mlp_patience: the MLP probe budget (100 epochs, patience 7).
        linear_epochs: the linear probe's epochs.
        max_train_codes: subsample the training codes for the probes (None: all).
        every_n_epochs: also during training, every n epochs: the same probes on the held-out split, logged as
            ``val/*`` (the learning curve of the domain and content accuracies); 0: after testing only.
        retrieval_tolerance: steps a content factor may differ by and still match in the official retrieval score
            (SmallNORB: ``{azimuth: 2}``); absent factors must match exactly.
        cyclic_factors: factors whose distance is taken around the circle (SmallNORB's azimuth).
        probe_split: ``train_test`` (fit on training codes, score on held-out ones) or ``within_test`` (the official
            CelebA protocol: a stratified ``probe_fit_fraction`` / rest split of the held-out codes).
        probe_fit_fraction: the fitted share of ``within_test`` (0.7).
    """

    def __init__(self, mlp: bool = True, linear: bool = True, retrieval: bool = True, mlp_epochs: int = 100,
                 mlp_patience: int = 7, linear_epochs: int = 50, max_train_codes: int | None = None,
                 every_n_epochs: int = 0, retrieval_tolerance: dict[str, int] | None = None,
                 cyclic_factors: list[str] | None = None, probe_split: str = "train_test",
                 probe_fit_fraction: float = 0.7) -> None:
        if probe_split not in ("train_test", "within_test"):
            raise ValueError(f"`probe_split` must be train_test or within_test, got {probe_split!r}")
        self.probe_split, self.probe_fit_fraction = probe_split, probe_fit_fraction
        self.mlp, self.linear, self.retrieval = mlp, linear, retrieval
        self.every_n_epochs = every_n_epochs
        self.mlp_epochs, self.mlp_patience, self.linear_epochs = mlp_epochs, mlp_patience, linear_epochs
        self.max_train_codes = max_train_codes
        self.retrieval_tolerance = dict(retrieval_tolerance or {})
        self.cyclic_factors = set(cyclic_factors or [])
        self._codes: list[torch.Tensor] = []
        self._targets: dict[str, list[torch.Tensor]] = {}
        self._content_factors: tuple[list[str], list[str]] = ([], [])  # (classified, regressed), set at test time

    def summary_lines(self, metrics: dict[str, float]) -> list[str]:
        if "test/domain_acc" not in metrics:
            return []
        classified, regressed = self._content_factors
        content = ", ".join(f"{f} {metrics[f'test/{f}_acc']:.3f}" for f in classified if f"test/{f}_acc" in metrics)
        errors = ", ".join(f"{f} {metrics[f'test/{f}_l1']:.3g} (median predictor "
                           f"{metrics[f'test/{f}_l1_baseline']:.3g})" for f in regressed if f"test/{f}_l1" in metrics)
        lines = [f"domain accuracy {metrics['test/domain_acc']:.3f} (chance {metrics['test/domain_chance']:.3f}; "
                 f"lower = more invariant); content accuracy: {content or 'no categorical factors'}"]
        return lines + ([f"content L1 error (lower is better): {errors}"] if errors else [])

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require(pl_module, "embed", "disentanglement")
        require_datamodule(trainer, DomainDataModule, "disentanglement")

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._codes, self._targets = [], {}

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if isinstance(outputs, dict) and "embedding" in outputs:
            self._codes.append(outputs["embedding"].detach())
            self._targets.setdefault("domain", []).append(outputs["domain"])
            for name, values in outputs["factors"].items():
                self._targets.setdefault(name, []).append(values)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._codes:
            return
        test_codes = gather_variable(torch.cat(self._codes))
        test_targets = {k: gather_variable(torch.cat(v)) for k, v in self._targets.items()}
        self._probe_and_log(trainer, pl_module, test_codes, test_targets, "test")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The learning-curve monitor: the validation split embedded now, probed as at test time, logged as val/*."""
        if not self.every_n_epochs or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        datamodule = trainer.datamodule
        test_codes, test_targets = embed_domains(pl_module, datamodule.feature_dataloader(datamodule.monitor_split()))
        test_codes = gather_variable(test_codes)
        test_targets = {k: gather_variable(v) for k, v in test_targets.items()}
        self._probe_and_log(trainer, pl_module, test_codes, test_targets, "val")

    def _probe_and_log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, test_codes: torch.Tensor,
                       test_targets: dict[str, torch.Tensor], stage: str) -> None:
        datamodule = trainer.datamodule
        levels = {"domain": datamodule.num_domains, **datamodule.factor_levels}
        if stage == "test":
            self._content_factors = (sorted(k for k in test_targets if k in levels and k != "domain"),
                                     sorted(k for k in test_targets if k not in levels))
        if self.probe_split == "train_test":  # the training codes are embedded only when the probes fit on them
            train_codes, train_targets = embed_domains(pl_module, datamodule.feature_dataloader("train"))
            train_codes = gather_variable(train_codes)
            train_targets = {k: gather_variable(v) for k, v in train_targets.items()}
        if trainer.global_rank != 0:
            return
        if self.probe_split == "within_test":
            train_codes, train_targets, test_codes, test_targets = split_within(
                test_codes, test_targets, self.probe_fit_fraction)
        metrics = self.evaluate(train_codes, train_targets, test_codes, test_targets, levels)
        if stage != "test":
            metrics = {f"{stage}/{k.split('/', 1)[1]}": v for k, v in metrics.items()}
        pl_module.log_dict(metrics, rank_zero_only=True)

    def evaluate(self, train_codes: torch.Tensor, train_targets: dict[str, torch.Tensor], test_codes: torch.Tensor,
                 test_targets: dict[str, torch.Tensor], levels: dict[str, int]) -> dict[str, float]:
        if self.max_train_codes and train_codes.shape[0] > self.max_train_codes:
            order = torch.randperm(train_codes.shape[0], generator=torch.Generator().manual_seed(0))
            keep = order[: self.max_train_codes].to(train_codes.device)
            train_codes = train_codes[keep]
            train_targets = {k: v[keep] for k, v in train_targets.items()}
        metrics: dict[str, float] = {"test/domain_chance": 1.0 / levels["domain"]}
        for name, test_y in test_targets.items():
            if name not in levels:
                metrics.update(self.regression_metrics(name, train_codes, train_targets[name], test_codes, test_y))
                continue
            classes = levels[name]
            if name != "domain":
                metrics[f"test/{name}_chance"] = float(torch.bincount(test_y, minlength=classes).max() / len(test_y))
            if self.mlp:
                metrics[f"test/{name}_acc"] = mlp_probe(train_codes, train_targets[name], test_codes, test_y, classes,
                                                        self.mlp_epochs, self.mlp_patience)
            if self.linear:
                metrics[f"test/{name}_linear_acc"] = logistic_regression_probe(
                    train_codes, train_targets[name], test_codes, test_y, classes, self.linear_epochs)["top1"]
        if self.retrieval:
            database = torch.cat((train_codes, test_codes))
            labels = {k: torch.cat((train_targets[k], v)) for k, v in test_targets.items() if k in levels}
            index = torch.arange(train_codes.shape[0], database.shape[0], device=database.device)
            for name, value in retrieval_top1(test_codes, index, database, labels).items():
                metrics[f"test/retrieval_{name}_top1"] = value
            content = {k: v for k, v in labels.items() if k != "domain"}
            if content:
                official = tolerant_retrieval_top1(test_codes, index, database, content, levels,
                                                   self.retrieval_tolerance, self.cyclic_factors)
                metrics |= {f"test/official_retrieval_{name}": value for name, value in official.items()}
        domain_acc = metrics.get("test/domain_acc", float("nan"))
        rank_zero_info(f"[contrastlab] domain accuracy (lower = more invariant): {domain_acc:.3f} "
                       f"(chance {metrics['test/domain_chance']:.3f})")
        return metrics

    def regression_metrics(self, name: str, train_codes: torch.Tensor, train_y: torch.Tensor, test_codes: torch.Tensor,
                           test_y: torch.Tensor) -> dict[str, float]:
        """L1 errors of the probes for a continuous factor, and of the median predictor as the baseline."""
        metrics = {f"test/{name}_l1_baseline": median_predictor_l1(train_y, test_y)}
        if self.mlp:
            metrics[f"test/{name}_l1"] = mlp_regression_probe(train_codes, train_y, test_codes, test_y,
                                                              self.mlp_epochs, self.mlp_patience)
        if self.linear:
            metrics[f"test/{name}_linear_l1"] = ridge_regression_l1(train_codes, train_y, test_codes, test_y)
        return metrics
