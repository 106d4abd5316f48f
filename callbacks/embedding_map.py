"""A 2-D map of the held-out embeddings at the end of testing, coloured by label (MoCo v2, HCSC) or by domain and
by content (DCoDR: invariance shows as domains mixed within each content cluster).

The test split's embeddings are those the method's ``test_step`` returns (``embedding`` with ``label``, or
``domain`` and ``factors``); every rank's share is gathered and rank 0 draws a seeded sample of at most
``max_points`` (the projection's cost bound), projects it with t-SNE (scikit-learn) or UMAP (``umap-learn``, when
installed) and writes ``<run>/images/embedding_map.png``, also sent to every logger that takes images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info

from callbacks.base import ArtifactCallback
from contrastlab.errors import ConfigError
from contrastlab.loggers import send_image
from lightning_modules.components.distributed import gather_variable

METHODS = ("auto", "tsne", "umap")


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"callbacks.embedding_map.method must be one of {', '.join(METHODS)}, got {method!r}")


def project_2d(features: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """(n, d) features -> (n, 2) coordinates, and the name of the projection used. ``auto``: UMAP when
    ``umap-learn`` is installed, t-SNE otherwise."""
    check_method(method)
    if method in ("auto", "umap"):
        try:
            import umap
        except ImportError as missing:
            if method == "umap":
                raise ConfigError("callbacks.embedding_map.method=umap needs umap-learn: pip install -e '.[umap]'"
                                  ) from missing
        else:
            reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(features) - 1), random_state=seed)
            return reducer.fit_transform(features), "UMAP"
    from sklearn.manifold import TSNE

    # Perplexity must stay below the number of points; 30 (the usual value) from 91 points up.
    perplexity = float(min(30.0, max(2.0, (len(features) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(features), "t-SNE"


def render_map(coords: np.ndarray, colourings: dict[str, np.ndarray], title: str, path: Path) -> np.ndarray:
    """One scatter panel per colouring; saved to ``path``; returns the picture as (H, W, 3) uint8."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(colourings), figsize=(4.6 * len(colourings), 4.4), squeeze=False)
    for axis, (name, values) in zip(axes[0], colourings.items()):
        discrete = np.issubdtype(values.dtype, np.integer)
        levels = len(np.unique(values)) if discrete else 0
        cmap = "tab10" if 0 < levels <= 10 else "tab20" if 0 < levels <= 20 else "viridis"
        points = axis.scatter(coords[:, 0], coords[:, 1], c=values, cmap=cmap, s=6, alpha=0.8, linewidths=0)
        if 0 < levels <= 20:
            handles = [axis.scatter([], [], color=points.cmap(points.norm(v)), s=12) for v in np.unique(values)]
            axis.legend(handles, [str(v) for v in np.unique(values)], title=name, fontsize=6, title_fontsize=7,
                        loc="best", markerscale=1.0, ncol=2 if levels > 10 else 1)
        else:
            figure.colorbar(points, ax=axis, label=name)
        axis.set_title(f"coloured by {name}" + (f" ({levels} values)" if levels > 20 else ""), fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    figure.canvas.draw()
    picture = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return picture


class EmbeddingMap(ArtifactCallback):
    """Args:
        colour_by: targets to colour by, each a panel: ``label``, ``domain`` or a factor name (absent ones skipped).
        max_points: at most this many test embeddings are projected (a seeded sample: t-SNE's time grows faster
            than linearly with the points).
        method: ``auto`` (UMAP when installed, else t-SNE), ``tsne`` or ``umap``.
        seed: the sample and the projection's seed (the same map for the same embeddings).
        filename: the picture's name in ``<run>/images/``.
    """

    label = "embedding map"

    def __init__(self, colour_by: Sequence[str] = ("label",), max_points: int = 1000, method: str = "auto",
                 seed: int = 0, filename: str = "embedding_map.png") -> None:
        super().__init__()
        check_method(method)  # at set-up, not after training
        self.colour_by, self.max_points, self.method = list(colour_by), max_points, method
        self.seed, self.filename = seed, filename
        self._embeddings: list[torch.Tensor] = []
        self._targets: dict[str, list[torch.Tensor]] = {}

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._embeddings, self._targets = [], {}

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if not isinstance(outputs, dict) or "embedding" not in outputs:
            return
        self._embeddings.append(outputs["embedding"].detach().float())
        named = {k: outputs[k] for k in ("label", "domain") if k in outputs}
        named.update(outputs.get("factors") or {})
        for name in self.colour_by:
            if name in named:
                values = torch.as_tensor(named[name]).to(pl_module.device)
                if values.dim() == 1:  # scalar targets only (not CelebA's landmark vectors)
                    self._targets.setdefault(name, []).append(values)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._embeddings:
            return
        embeddings = gather_variable(torch.cat(self._embeddings))
        targets = {k: gather_variable(torch.cat(v)) for k, v in self._targets.items()}
        self._embeddings, self._targets = [], {}
        if trainer.global_rank != 0:
            return
        if embeddings.shape[0] < 4:
            rank_zero_info("[contrastlab] embedding map skipped: fewer than 4 test embeddings")
            return
        generator = torch.Generator().manual_seed(self.seed)
        keep = torch.randperm(embeddings.shape[0], generator=generator)[: self.max_points].sort().values
        features = torch.nn.functional.normalize(embeddings[keep.to(embeddings.device)], dim=1).cpu().numpy()
        coords, used = project_2d(features, self.method, self.seed)
        colourings = {name: values[keep.to(values.device)].cpu().numpy() for name, values in targets.items()}
        if not colourings:
            colourings = {"none": np.zeros(len(coords), dtype=np.int64)}
        title = (f"{used} of {len(coords)} held-out embeddings (of {embeddings.shape[0]}), "
                 f"{type(pl_module).__name__}, step {trainer.global_step}")
        path = Path(trainer.default_root_dir) / "images" / self.filename
        picture = render_map(coords, colourings, title, path)
        image = torch.from_numpy(picture).permute(2, 0, 1).float() / 255
        for logger in trainer.loggers:
            send_image(logger, "test/embedding_map", image, trainer.global_step)
        self.last_path = str(path)
