"""The written contracts (docs/extending.md): a fourth method that uses only them runs through the CLI, a missing
capability stops with one line naming the callback, and every configured class documents itself."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CLEAN_ENV, ROOT

from contrastlab.errors import ConfigError


def targets(folder: Path) -> set[str]:
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("_target_"), str):
                found.add(node["_target_"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in folder.rglob("*.yaml"):
        walk(yaml.safe_load(path.read_text()))
    return found


def resolve(target: str) -> object:
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


PROJECT = ("callbacks.", "datamodules.", "lightning_modules.", "contrastlab.")


@pytest.mark.parametrize("target", sorted(t for t in targets(ROOT / "conf") if t.startswith(PROJECT)))
def test_every_configured_class_has_a_docstring(target: str) -> None:
    assert (resolve(target).__doc__ or "").strip(), f"{target} has no docstring that help() can show"


def test_a_fourth_method_runs_through_the_cli_on_the_contracts_alone(tmp_path, tiny_cifar_root) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "train.py", "experiment=align_uniform_cifar",
               f"hydra.searchpath=[file://{ROOT / 'tests' / 'conf'}]", f"data.root={tiny_cifar_root}",
               "trainer.fast_dev_run=true", "data.batch_size=8", "data.global_batch_size=8", "data.num_workers=0",
               "model.backbone.widths=[8,16]", "print_config=false", f"hydra.run.dir={run_dir}"]
    env = {**CLEAN_ENV, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), CLEAN_ENV.get("PYTHONPATH", "")])}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["test/knn_top1"] <= 1 and "test/nmi" in metrics


def test_a_missing_capability_names_the_callback_that_needs_it() -> None:
    from toy_method import AlignUniform

    from callbacks.derain_grid import DerainGrid
    from lightning_modules.components.backbones import ConvBackbone

    toy = AlignUniform(ConvBackbone((8,)))
    assert toy.supports("embed") and not toy.supports("restore") and not toy.supports("translate")
    with pytest.raises(ConfigError, match=r"derain_grid.*AlignUniform\.restore\(\).*callbacks\.derain_grid=null"):
        DerainGrid().setup(None, toy, "fit")  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError, match="AlignUniform does not implement restore"):
        toy.restore(None)  # type: ignore[arg-type]


def test_the_datamodule_contract_names_what_is_missing() -> None:
    from datamodules.base import BaseDataModule

    class Bare(BaseDataModule):
        """A datamodule that provides training batches only."""

    bare = Bare()
    assert bare.has_test_data() and bare.num_classes is None and bare.per_device_batch_size() is None
    with pytest.raises(NotImplementedError, match="Bare does not implement feature_dataloader"):
        bare.feature_dataloader("eval")


def test_translate_is_supported_only_with_a_generator() -> None:
    from lightning_modules.components.backbones import ConvBackbone
    from lightning_modules.dcodr.module import DCoDR
    from lightning_modules.dcodr.networks import ContentEncoder

    norec = DCoDR(ContentEncoder(ConvBackbone((8,)), content_dim=8, hidden_dim=None), generator=None)
    assert norec.supports("embed") and not norec.supports("translate")


def test_the_test_output_writer_saves_each_test_image_by_name(tmp_path) -> None:
    import torch

    from callbacks.prediction_writer import TestOutputWriter

    class Trainer:
        default_root_dir = str(tmp_path)

    outputs = {"name": ["a.png", "b.png"], "image": torch.rand(2, 3, 8, 8)}
    TestOutputWriter(enabled=False).on_test_batch_end(Trainer(), None, outputs, None, 0)  # type: ignore[arg-type]
    assert not (tmp_path / "test_outputs").exists()
    writer = TestOutputWriter(enabled=True)
    writer.on_test_batch_end(Trainer(), None, outputs, None, 0)  # type: ignore[arg-type]
    assert sorted(p.name for p in (tmp_path / "test_outputs").iterdir()) == ["a.png", "b.png"] == [
        p.name for p in writer.written]


def test_images_go_to_every_logger_that_takes_them(tmp_path) -> None:
    import torch
    from pytorch_lightning.loggers import CSVLogger

    from contrastlab.loggers import send_image

    class ImageAPILogger:  # any logger with Lightning's log_image, whatever its class name
        def log_image(self, key: str, images: list, step: int) -> None:
            self.received = (key, images[0].shape, str(images[0].dtype), step)

    class Writer:
        def add_image(self, key: str, image: torch.Tensor, global_step: int) -> None:
            self.received = (key, tuple(image.shape), global_step)

    class WriterLogger:  # a TensorBoard-style experiment
        experiment = Writer()

    grid = torch.rand(3, 8, 6)
    api, writer = ImageAPILogger(), WriterLogger()
    assert send_image(api, "val/grid", grid, 3) and api.received == ("val/grid", (8, 6, 3), "uint8", 3)
    assert send_image(writer, "val/grid", grid, 4) and writer.experiment.received == ("val/grid", (3, 8, 6), 4)
    assert not send_image(CSVLogger(tmp_path), "val/grid", grid, 5)


def test_every_reference_note_cited_in_the_code_exists() -> None:
    """Docstrings and configs cite ``docs/references.md, N4``; a renumbered or missing note is a broken link."""
    import re

    notes = set(re.findall(r"^- \*\*([A-Z]\d+)\.", (ROOT / "docs" / "references.md").read_text(), re.MULTILINE))
    assert {"N1", "H1", "D1", "S1"} <= notes
    cited: dict[str, set[str]] = {}
    for folder in ("callbacks", "conf", "contrastlab", "datamodules", "lightning_modules", "tests"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".yaml") and path.is_file():
                for note in re.findall(r"docs/references\.md, ([A-Z]\d+)", path.read_text()):
                    cited.setdefault(note, set()).add(str(path.relative_to(ROOT)))
    assert cited, "no citation found: the pattern no longer matches the code"
    missing = {note: sorted(files) for note, files in cited.items() if note not in notes}
    assert not missing, f"cited but not in docs/references.md: {missing}"
    stale = [str(path.relative_to(ROOT)) for folder in ("callbacks", "conf", "datamodules", "lightning_modules")
             for path in (ROOT / folder).rglob("*.*") if path.suffix in (".py", ".yaml")
             and re.search(r"\bspec (Sec|R\d|B\d|\d)", path.read_text())]
    assert not stale, f"citations of documents outside the repository: {stale}"


def test_every_configured_data_source_is_a_data_source() -> None:
    """One vocabulary: whatever `data.splits` / `data.source` names is a DataSource with load(seed)."""
    from datamodules.base import DataSource

    sources = {t for t in targets(ROOT / "conf") if t.endswith(("Source", "Splits", "Split"))}
    assert len(sources) >= 7, sources
    for target in sorted(sources):
        assert issubclass(resolve(target), DataSource), f"{target} is not a datamodules.base.DataSource"
