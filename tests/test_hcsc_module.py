"""HCSC and MoCo v2 modules: warm-up then clustering, the selective losses, persistent state across checkpoints."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from datamodules.augmentations import Views, ViewSpec, eval_transform
from datamodules.imagefolder import ImageDataModule
from datamodules.synthetic import write_image_folder
from lightning_modules.components.backbones import ConvBackbone
from lightning_modules.components.kmeans import hierarchical_kmeans
from lightning_modules.hcsc.losses import SelectiveInstanceLoss
from lightning_modules.hcsc.module import HCSC
from lightning_modules.hcsc.selection import queue_log_normaliser


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hcsc_data")
    write_image_folder(root, num_classes=4, per_class=16, size=16, split="train")
    return root


def datamodule(root: Path) -> ImageDataModule:
    return ImageDataModule(str(root), val_dir=None, holdout_fraction=0.25, batch_size=16, num_workers=0,
                           train_views=Views([ViewSpec(16, (0.3, 1.0), 0.0, 2)]),
                           eval_transform=eval_transform(None, 16), eval_batch_size=20)


def hcsc(**kwargs) -> HCSC:
    torch.manual_seed(0)
    options = dict(num_clusters=[6, 3], warmup_epochs=1, projection_hidden=16, projection_dim=8, queue_size=32,
                   kmeans_restarts=1, optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9))
    options.update(kwargs)
    return HCSC(ConvBackbone((8, 16)), **options)


def fit(model: HCSC, root: Path, epochs: int, tmp_path: Path, ckpt: str | None = None) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path), enable_checkpointing=False)
    trainer.fit(model, datamodule=datamodule(root), ckpt_path=ckpt)
    return trainer


def test_warmup_is_moco_then_prototypes_are_built_and_used(folder: Path, tmp_path: Path) -> None:
    model = hcsc()
    trainer = fit(model, folder, 1, tmp_path)
    assert not model.hierarchy.ready  # epoch 0 is warm-up: plain MoCo v2
    assert int(model.queue.pointer) == (3 * 16) % 32  # 48 training images -> 3 batches of 16 enqueued
    trainer = fit(model, folder, 2, tmp_path, ckpt=None)
    assert model.hierarchy.ready
    assert model.hierarchy.assignments(0).shape == (48,) and model.hierarchy.centroids(1).shape == (3, 8)
    for key in ("train/instance", "train/proto", "train/instance_keep", "train/proto_keep", "cluster/kmeans_seconds"):
        assert key in trainer.callback_metrics, key
    assert 0 < float(trainer.callback_metrics["train/instance_keep"]) <= 1
    # The per-level normalisers, updated row by row as keys arrived (the queue wrapped), match a full recompute.
    for level, cached in enumerate(model._queue_normalisers):
        full = queue_log_normaliser(model.queue.keys, model.hierarchy.centroids(level),
                                    model.hierarchy.concentration(level))
        assert torch.allclose(cached, full, atol=1e-5)


def test_selective_losses_reduce_to_moco_when_everything_is_kept() -> None:
    model = hcsc(masking="zero")
    x = F.normalize(torch.randn(40, 8), dim=1)
    model.hierarchy.update(hierarchical_kmeans(x, [6, 3], iterations=5, distributed=False), torch.arange(40), 40,
                           distributed=False)
    q, k = F.normalize(torch.randn(5, 8), dim=1), F.normalize(torch.randn(5, 8), dim=1)
    labels = model.hierarchy.labels(torch.arange(5))
    keep_all = [torch.ones(5, 32, dtype=torch.bool)] * 2
    queue = model.queue.snapshot()
    plain, _ = model.instance_loss(q, k, queue)
    summed, masks, ratio = model.selective_instance_loss(q, k, queue, labels, keep_all)
    assert summed.item() == pytest.approx(2 * plain.item(), rel=1e-6) and ratio.item() == 1.0
    model.instance_criterion = SelectiveInstanceLoss(model.hparams.temperature, "zero", reduction="mean")
    mean = model.selective_instance_loss(q, k, queue, labels, keep_all)[0]
    assert mean.item() == pytest.approx(plain.item(), rel=1e-6)
    model.hparams.instance_selection = False
    single, masks, _ = model.selective_instance_loss(q, k, queue, labels)
    assert single.item() == pytest.approx(plain.item(), rel=1e-6) and masks == []
    proto, proto_ratio = model.selective_prototype_loss(q, labels)
    assert torch.isfinite(proto) and 0 < proto_ratio <= 1


def test_checkpoint_round_trip_restores_queue_prototypes_and_assignments(folder: Path, tmp_path: Path) -> None:
    model = hcsc(warmup_epochs=0)
    trainer = fit(model, folder, 1, tmp_path)
    path = tmp_path / "hcsc.ckpt"
    trainer.save_checkpoint(path)
    state = model.state_dict()
    restored = hcsc(warmup_epochs=0)
    assert not restored.hierarchy.ready
    restored.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    for key, value in state.items():
        if key.startswith(("queue.", "hierarchy.")):
            assert torch.equal(restored.state_dict()[key], value), key
    # Through Lightning's resume path too (the fit ends at once: the epoch budget is spent).
    resumed = hcsc(warmup_epochs=5)
    fit(resumed, folder, 1, tmp_path, ckpt=str(path))
    assert torch.equal(resumed.queue.keys, model.queue.keys) and int(resumed.queue.pointer) == int(model.queue.pointer)
    assert torch.equal(resumed.hierarchy.assignments(0), model.hierarchy.assignments(0))
    assert torch.equal(resumed.hierarchy.parent_probability(0), model.hierarchy.parent_probability(0))


def test_queue_size_must_divide_by_the_global_batch(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="queue_size"):
        fit(hcsc(queue_size=40), folder, 1, tmp_path)


def test_split_bn_keys_are_encoded_in_shuffled_groups() -> None:
    """bn_splits: every key is normalised with a random group of the batch, then returned in input order."""
    from lightning_modules.components.backbones import ConvBackbone
    from lightning_modules.moco.module import MoCoV2

    torch.manual_seed(0)
    model = MoCoV2(ConvBackbone((4, 8)), projection_hidden=8, projection_dim=4, queue_size=16, bn_splits=2)
    images = torch.randn(8, 3, 8, 8)
    torch.manual_seed(1)
    keys = model.split_bn_forward(images)
    torch.manual_seed(1)
    order = torch.randperm(8)
    groups = [model.encoder_k(images[order][:4])[1], model.encoder_k(images[order][4:])[1]]
    assert torch.allclose(keys, torch.cat(groups)[torch.argsort(order)], atol=1e-6)
    assert not torch.allclose(keys, model.encoder_k(images)[1], atol=1e-4)  # whole-batch BN differs
