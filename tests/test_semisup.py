"""Semi-supervised fine-tuning: the labelled subsets (lists and stratified fractions), the trunk that trains
(unlike the linear probe's), the per-part learning rates, and the fine-tuned classifier exported as torchvision's fc."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from contrastlab.errors import DataError
from datamodules.label_subsets import labelled_subset, read_name_list
from lightning_modules.components.backbones import ConvBackbone, ResNetBackbone
from lightning_modules.linear_probe import LinearProbe
from lightning_modules.semisup import SemiSupervisedFineTune


def test_a_fraction_is_stratified_and_seeded() -> None:
    files = [Path(f"{i}.png") for i in range(400)]
    labels = [i % 4 for i in range(400)]
    chosen = labelled_subset(files, labels, 0.1, None, seed=3)
    assert Counter(labels[i] for i in chosen) == {0: 10, 1: 10, 2: 10, 3: 10}
    assert chosen == labelled_subset(files, labels, 0.1, None, seed=3)
    assert chosen != labelled_subset(files, labels, 0.1, None, seed=4)


def test_a_list_selects_its_files_and_names_the_missing_ones(tmp_path) -> None:
    files = [Path(f"/data/train/n01/n01_{i}.JPEG") for i in range(6)]
    (tmp_path / "ok.txt").write_text("n01_1.JPEG\nn01_4.JPEG\n")
    assert labelled_subset(files, [0] * 6, None, str(tmp_path / "ok.txt"), seed=0) == [1, 4]
    (tmp_path / "bad.txt").write_text("n01_1.JPEG\nn02_9.JPEG\n")
    with pytest.raises(DataError, match=r"1 of the 2 files.*n02_9.JPEG"):
        labelled_subset(files, [0] * 6, None, str(tmp_path / "bad.txt"), seed=0)
    with pytest.raises(DataError, match="not both"):
        labelled_subset(files, [0] * 6, 0.5, str(tmp_path / "ok.txt"), seed=0)


def test_the_shipped_imagenet_lists_are_the_protocols() -> None:
    for name, count in (("imagenet_1percent.txt.gz", 12811), ("imagenet_10percent.txt.gz", 128116)):
        names = read_name_list(name, "data.label_list")
        assert len(names) == count
        classes = {n.split("_")[0] for n in names}
        assert len(classes) == 1000 and all(c.startswith("n") and len(c) == 9 for c in classes)


def one_step(model: LinearProbe) -> None:
    optimizer = model.optimizer_factory(model.parameter_groups())
    model.train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(6, 3, 16, 16)), torch.tensor([0, 1, 2, 0, 1, 2]))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_fine_tuning_trains_the_trunk_which_the_linear_probe_freezes() -> None:
    import functools

    sgd = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    for model, trunk_moves in ((SemiSupervisedFineTune(ConvBackbone((4, 8)), 0.005, 0.02, 3, sgd), True),
                               (LinearProbe(ConvBackbone((4, 8)), 3, sgd), False)):
        before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
        one_step(model)
        moved = any(not torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
        assert moved == trunk_moves, type(model).__name__
    fine_tune = SemiSupervisedFineTune(ConvBackbone((4, 8)), 0.005, 0.02, 3)
    assert fine_tune.backbone.training  # BN statistics update (Lightning keeps submodule modes through fit)
    groups = fine_tune.parameter_groups()
    assert [(g["name"], g["lr"]) for g in groups] == [("trunk", 0.005), ("head", 0.02)]


def test_the_fine_tuned_classifier_is_exported_as_torchvision_fc(tmp_path) -> None:
    import torchvision

    from contrastlab.export import export_trunk

    model = SemiSupervisedFineTune(ResNetBackbone("resnet18"), num_classes=7)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "semisup.ckpt")
    target = export_trunk(tmp_path / "semisup.ckpt", "torchvision", "resnet18", tmp_path / "export")
    net = torchvision.models.resnet18(num_classes=7)
    net.load_state_dict(torch.load(target, weights_only=True), strict=True)
    assert torch.equal(net.fc.weight, model.classifier.weight)
