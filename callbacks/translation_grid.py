"""Domain-translation grids for DCoDR: the content of row i rendered with the domain embedding of column j; the
columns titled by their domain, the rows named by the content image's domain."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from callbacks.base import ArtifactCallback
from callbacks.image_logging import labelled_grid, publish_grid
from lightning_modules.base import BaseModule


class TranslationGrid(ArtifactCallback):
    """Rows: held-out images of different domains (first column); top row: an image of each column's domain;
    cell (i, j) = G(content of row i, embedding of domain j), so the diagonal is a reconstruction.

    Args:
        rows: how many content images / domains.
        every_n_epochs: also render during training (0: only after testing).
    """

    def __init__(self, rows: int = 6, every_n_epochs: int = 0) -> None:
        super().__init__()
        self.rows, self.every_n_epochs = rows, every_n_epochs
        self.enabled = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Optional by design: the disentanglement callbacks serve DCoDR-norec too, which has no generator.
        self.enabled = isinstance(pl_module, BaseModule) and pl_module.supports("translate")

    def _examples(self, trainer: pl.Trainer) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Images of ``rows`` different domains, their domains, and each one's content (its factor values)."""
        dataset = trainer.datamodule.feature_dataloader("eval").dataset
        images, domains, contents, seen = [], [], [], set()
        for i in range(len(dataset)):
            sample = dataset[i]
            if sample["domain"] not in seen:
                seen.add(sample["domain"])
                images.append(sample["image"])
                domains.append(sample["domain"])
                factors = sample.get("factors", {})
                contents.append(" ".join(f"{k}={int(v)}" for k, v in factors.items() if torch.as_tensor(v).numel()
                                         == 1 and k != "content") or f"image {i}")
            if len(images) == self.rows:
                break
        return torch.stack(images), torch.tensor(domains), contents

    @rank_zero_only
    def render(self, trainer: pl.Trainer, pl_module: pl.LightningModule, filename: str, key: str) -> None:
        if not self.enabled:
            return
        images, domains, contents = self._examples(trainer)
        was_training = pl_module.training
        pl_module.eval()
        grid = pl_module.translate(images.to(pl_module.device), domains.to(pl_module.device)).cpu()
        pl_module.train(was_training)
        rows, cols = grid.shape[:2]
        blank = torch.ones_like(images[0])
        tiles = [blank, *images]  # the header row: one exemplar of each column's domain
        for i in range(rows):
            tiles += [images[i], *grid[i]]
        names = getattr(getattr(trainer.datamodule, "data", None), "domain_names", None) or []
        label = [names[d] if d < len(names) else str(d) for d in domains.tolist()]
        titles = ["content \\ domain", *(f"domain {n}" for n in label)]
        rows_named = ["domain exemplars", *(f"{n}: {c}" for n, c in zip(label, contents))]
        canvas = labelled_grid(torch.stack(tiles), cols + 1, titles, rows_named)
        self.last_path = str(publish_grid(trainer, canvas, key, filename))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.render(trainer, pl_module, f"translation_epoch{trainer.current_epoch:03d}.png", "train/translation")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.render(trainer, pl_module, "translation_test.png", "test/translation")
