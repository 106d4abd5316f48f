"""What every image-restoration method shares (NLCL today): held-out PSNR/SSIM through ``restore``.

A subclass implements ``restore(images, with_rain) -> {"background": ...}`` on images in [-1, 1]; this base then
provides validation and test metrics (RGB and Y channel, for the output and for the rainy input itself, reduced
across ranks by torchmetrics), the test outputs for ``callbacks.test_outputs``, prediction for ``eval.py
mode=predict`` and the end-of-run headline.
"""

from __future__ import annotations

from typing import Any

import torch

from lightning_modules.base import BaseModule, OptimizerFactory
from lightning_modules.components.restoration_eval import RestorationMetrics


class RestorationModule(BaseModule):
    """Base of the restoration methods: evaluation of ``restore`` on batches ``{"rainy", "target"?, "name"}``.

    Args: as ``BaseModule`` (optimizer, scheduler, channels_last, compile).
    """

    def __init__(self, optimizer: OptimizerFactory | None = None, scheduler: dict[str, Any] | None = None,
                 channels_last: bool = False, compile: bool = False) -> None:
        super().__init__(optimizer, scheduler, channels_last, compile)
        self.val_metrics, self.test_metrics = RestorationMetrics(), RestorationMetrics()

    def _evaluate(self, batch: dict[str, Any], metrics: RestorationMetrics) -> torch.Tensor:
        background = self.restore(batch["rainy"], with_rain=False)["background"].clamp(-1, 1)
        if "target" in batch:
            metrics.update((background + 1) / 2, (batch["rainy"] + 1) / 2, (batch["target"] + 1) / 2)
        return background

    def _log_metrics(self, stage: str, metrics: RestorationMetrics) -> None:
        """Log the epoch's PSNR/SSIM; ranks reduce their states inside ``compute`` (all ranks call it)."""
        seen = torch.tensor(float(metrics.output_rgb["psnr"].update_count > 0), device=self.device)
        if self.trainer.world_size > 1:
            seen = self.all_gather(seen).max()
        if seen.item() > 0:
            values = metrics.compute()
            self.log_dict({f"{stage}/{k}": v for k, v in values.items()})
        metrics.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Metrics of the batch; the derained images go to the callbacks (``callbacks.test_outputs`` writes them
        when ``save_test_outputs`` is on)."""
        background = self._evaluate(batch, self.test_metrics)
        return {"name": list(batch["name"]), "image": (background + 1) / 2}

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    def summary_lines(self, metrics: dict[str, float]) -> list[str]:
        """The headline: held-out PSNR/SSIM of the rainy input against the restored output."""
        if "test/psnr" not in metrics:
            return []
        rainy, derained = metrics["test/psnr_rainy"], metrics["test/psnr"]
        lines = [f"held-out PSNR: rainy input {rainy:.2f} dB -> derained {derained:.2f} dB "
                 f"(SSIM {metrics['test/ssim_rainy']:.3f} -> {metrics['test/ssim']:.3f})"]
        if "test/psnr_cbcr" in metrics:
            m = metrics
            lines.append(f"colour: chroma PSNR {m['test/psnr_cbcr_rainy']:.2f} -> {m['test/psnr_cbcr']:.2f} dB, "
                         f"mean-colour shift {m['test/colour_shift_rainy']:.2f} -> {m['test/colour_shift']:.2f} "
                         "(8-bit levels)")
        return lines

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        background = self.restore(batch["rainy"], with_rain=False)["background"].clamp(-1, 1)
        return {"name": list(batch["name"]), "image": (background + 1) / 2}
