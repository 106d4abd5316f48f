"""What the project's callbacks share, so that ``train.py`` / ``eval.py`` can report them without knowing each
callback: where the files they wrote are (``ArtifactCallback``) and the headline of the metrics they computed
(``ReportingCallback``). The capabilities a callback needs from a method are checked with
``lightning_modules.base.require`` at setup."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl


class ArtifactCallback(pl.Callback):
    """A callback that writes files into the run folder.

    Attributes:
        last_path: the latest image grid it wrote (printed in the end-of-run summary), or None.
        written: every file it wrote in prediction mode (counted by ``eval.py``).
        label: what ``last_path`` is called in the end-of-run summary.
    """

    label = "image grid"

    def __init__(self) -> None:
        self.last_path: str | None = None
        self.written: list[Path] = []


class ReportingCallback(pl.Callback):
    """A callback that computes test metrics and states their headline at the end of ``train.py``.

    Whoever computes a metric summarises it: the evaluation callbacks here, a method's own ``summary_lines`` for
    the metrics its ``test_step`` logs (NLCL's PSNR / SSIM).
    """

    def summary_lines(self, metrics: dict[str, float]) -> list[str]:
        """Lines a person reads first, from the run's final ``metrics`` (none when its metrics are absent)."""
        return []
