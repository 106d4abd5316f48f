"""The labelled part of a training split for semi-supervised fine-tuning (HCSC ``eval_semisup.py``).

Two ways to name it: a list of file names (ImageNet's ``1percent.txt`` / ``10percent.txt``, the lists SimCLR
introduced; shipped gzipped in ``datamodules/subsets/``), or a seeded stratified fraction of every class (CIFAR-scale
runs: 1 % or 10 % of the pretraining split's labels).
"""

from __future__ import annotations

import gzip
from pathlib import Path

from contrastlab.errors import DataError, MissingPathError
from datamodules.stratify import stratified_split

SUBSET_DIR = Path(__file__).resolve().parent / "subsets"


def read_name_list(path: str | Path, key: str) -> set[str]:
    """The file names of a list (one a line; ``.gz`` read as gzip); a relative name is looked up in
    ``datamodules/subsets/`` when it is not a file."""
    path = Path(path).expanduser()
    if not path.is_file() and (SUBSET_DIR / path).is_file():
        path = SUBSET_DIR / path
    if not path.is_file():
        raise MissingPathError(f"label list '{path}' does not exist (config key `{key}`)")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        names = {line.strip() for line in handle if line.strip()}
    if not names:
        raise DataError(f"label list '{path}' names no file (config key `{key}`)")
    return names


def labelled_subset(files: list[Path], labels: list[int] | None, fraction: float | None, name_list: str | None,
                    seed: int) -> list[int]:
    """Sorted indices of the training files whose labels fine-tuning may use (``data.label_fraction`` or
    ``data.label_list``, not both)."""
    if fraction is not None and name_list is not None:
        raise DataError("set one of `data.label_fraction` and `data.label_list`, not both")
    if labels is None:
        raise DataError("semi-supervised fine-tuning needs labeled data (an ImageFolder training split)")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise DataError(f"`data.label_fraction` must be in (0, 1], got {fraction}")
        _, kept = stratified_split(labels, len(files), fraction, seed)
        return sorted(kept)
    assert name_list is not None
    names = read_name_list(name_list, "data.label_list")
    chosen = [i for i, f in enumerate(files) if f.name in names]
    if len(chosen) < len(names):
        missing = sorted(names - {files[i].name for i in chosen})
        raise DataError(f"{len(missing)} of the {len(names)} files of '{name_list}' are not in the training split "
                        f"(config key `data.label_list`), e.g. {missing[:3]}")
    return chosen
