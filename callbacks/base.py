"""What the project's callbacks share: where the files they wrote are, so that ``train.py`` / ``eval.py`` can
list them without knowing each callback (the capabilities a callback needs from a method are checked with
``lightning_modules.base.require`` at setup)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl


class ArtifactCallback(pl.Callback):
    """A callback that writes files into the run folder.

    Attributes:
        last_path: the latest image grid it wrote (printed in the end-of-run summary), or None.
        written: every file it wrote in prediction mode (counted by ``eval.py``).
    """

    def __init__(self) -> None:
        self.last_path: str | None = None
        self.written: list[Path] = []
