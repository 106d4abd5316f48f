"""Per-experiment test settings, in one table: a new experiment (or method, or data set) adds one row to ``CASES``.

Each row says where the experiment's data lies among the test fixtures, the overrides that shrink it to test size
(same code paths), and what its ``metrics.json`` must hold after a ``fast_dev_run``. ``test_configs`` composes and
instantiates every row; ``test_train`` runs every row through ``train.py``; a conf/experiment file without a row
fails ``test_every_experiment_has_a_test_case``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Fixture paths by name (conftest's ``data_roots``): paired, shared, imagenet, cifar, cars3d, imagenet_trunk,
# cifar_trunk, imagenet_label_list, voc, spa, shapes3d, npz, folder.
Roots = Mapping[str, Path]
Check = Callable[[dict], None]

# NLCL at test size without changing its structure (16 blocks keep the official layers 0, 2, 4, 8, 12).
NLCL_TINY = ("data.crop_size=32", "data.batch_size=2", "data.num_workers=0", "model.generator_b.width=8",
             "model.generator_r.width=8", "model.discriminator.base_channels=8", "model.head_dim=16")
# Representation learning at test size: the same code paths (clustering from the first epoch, every evaluation).
REPR_TINY = ("data.global_batch_size=4", "data.num_workers=0", "data.eval_batch_size=16",
             "callbacks.representation_eval.probe_epochs=5", "callbacks.embedding_map.max_points=48")
SMALL_TRUNK = ("model/backbone=conv", "model.backbone.widths=[8,16]")  # the small CNN instead of a ResNet
HCSC_TINY = ("model.warmup_epochs=0", "model.num_clusters=[6,4,2]", "model.kmeans_restarts=1")
# DCoDR at test size: 16 px images, 2 x 4 balanced batches, short probes; a small generator where there is one.
DCODR_TINY = ("data.source.size=16", "data.domains_per_batch=2", "data.per_domain=4", "data.batch_size=8",
              "data.num_workers=0",
              "model.encoder.hidden_dim=null", "callbacks.disentanglement.mlp_epochs=2",
              "callbacks.disentanglement.linear_epochs=2", "callbacks.embedding_map.max_points=48")
DCODR_GENERATOR_TINY = ("model.generator.channels=16", "model.reconstruction.perceptual=false")
DCODR_SMALL_ENCODER = ("model/backbone@model.encoder.backbone=conv", "model.encoder.backbone.widths=[8,16]")

NLCL_METRICS = frozenset({"test/psnr", "test/ssim", "test/psnr_y", "test/ssim_y", "test/psnr_rainy",
                          "test/ssim_rainy", "test/psnr_cbcr", "test/colour_shift", "test/colour_shift_rainy"})
SSL_METRICS = frozenset({"test/knn_top1", "test/knn_top5", "test/nmi", "test/ami", "test/acc"})
HCSC_METRICS = SSL_METRICS | {"cluster/nonempty_0", "train/proto"}
DCODR_METRICS = frozenset({"test/domain_acc", "test/domain_chance", "test/domain_linear_acc",
                           "test/retrieval_domain_top1"})


@dataclass(frozen=True)
class ExperimentCase:
    """How the tests run one experiment.

    Args:
        data: the overrides that point it at its fixture data (none for generated data).
        tiny: the overrides that shrink it to test size.
        metrics: keys ``metrics.json`` must hold after ``fast_dev_run``.
        absent: keys it must not hold.
        check: any further assertion on the metrics.
    """

    data: Callable[[Roots], list[str]] = lambda roots: []
    tiny: tuple[str, ...] = ()
    metrics: frozenset[str] = frozenset()
    absent: frozenset[str] = frozenset()
    check: Check | None = field(default=None)

    def overrides(self, roots: Roots) -> list[str]:
        return [*self.data(roots), *self.tiny]


def _paired(roots: Roots) -> list[str]:  # the fixture holds 10 pairs
    return [f"data.root={roots['paired']}", "data.splits.n_rainy=3", "data.splits.n_clean=3", "data.splits.n_test=3",
            "data.splits.n_val=1"]


def _official_folders(roots: Roots) -> list[str]:
    return [f"data.splits.rainy_dir={roots['paired']}/input", f"data.splits.clean_dir={roots['paired']}/target",
            "model.pretrained_b=null", "model.pretrained_r=null"]


def _cars3d(roots: Roots) -> list[str]:
    return [f"data.source.root={roots['cars3d']}", f"data.source.cache_dir={roots['cars3d'] / 'cache'}"]


def _root(name: str) -> Callable[[Roots], list[str]]:
    return lambda roots: [f"data.root={roots[name]}"]


def _linear_on(data: str, *extra: str) -> Callable[[Roots], list[str]]:
    """A linear probe needs its data and a trunk checkpoint to freeze."""
    return lambda roots: [f"data.root={roots[data]}", f"model.backbone.checkpoint={roots[data + '_trunk']}", *extra]


def _semisup(data: str, *extra: str) -> ExperimentCase:
    """Fine-tuning needs its data, a trunk checkpoint and a labelled part: the ImageNet cases name files by a list
    (the fixture's ``imagenet_label_list``), CIFAR takes a stratified fraction."""
    def in_unit_interval(metrics: dict) -> None:
        assert 0 <= metrics["test/semisup_top1"] <= metrics["test/semisup_top5"] <= 1

    def overrides(roots: Roots) -> list[str]:
        subset = (f"data.label_list={roots['imagenet_label_list']}" if data == "imagenet" else
                  "data.label_fraction=0.5")
        return [*_linear_on(data, *extra)(roots), subset]

    return ExperimentCase(overrides, REPR_TINY[:3], frozenset({"test/semisup_top1", "test/semisup_top5"}),
                          check=in_unit_interval)


def _nlcl(data: Callable[[Roots], list[str]] = lambda roots: [], metrics: frozenset[str] = NLCL_METRICS
          ) -> ExperimentCase:
    return ExperimentCase(data, NLCL_TINY, metrics)


def _prototypes_are_used(metrics: dict) -> None:
    assert metrics["cluster/nonempty_0"] >= 1


def _ssl(data: str, hcsc: bool, small_trunk: bool = True) -> ExperimentCase:
    tiny = REPR_TINY + (SMALL_TRUNK if small_trunk else ()) + (HCSC_TINY if hcsc else ())
    linear = frozenset({"test/linear_top1"})  # CIFAR probes linearly in the run; ImageNet has its own protocol
    metrics = HCSC_METRICS if hcsc else SSL_METRICS
    if data == "imagenet":  # its 1,000 / 25,000 clusters shrunk to the fixture: 3 (= classes) and 4
        tiny, metrics = tiny + ("callbacks.representation_eval.cluster_k=[3,4]",), metrics | {"test/nmi_k4"}
    return ExperimentCase(_root(data), tiny, metrics | linear if data == "cifar" else metrics,
                          frozenset() if data == "cifar" else linear, _prototypes_are_used if hcsc else None)


def _linear_probe(data: Callable[[Roots], list[str]]) -> ExperimentCase:
    def in_unit_interval(metrics: dict) -> None:
        assert 0 <= metrics["test/linear_top1"] <= 1

    return ExperimentCase(data, REPR_TINY[:3], frozenset({"test/linear_top1"}), check=in_unit_interval)


def _dcodr(data: Callable[[Roots], list[str]] = lambda roots: [], generator: bool = True, small_encoder: bool = True,
           metrics: frozenset[str] = frozenset(), check: Check | None = None) -> ExperimentCase:
    tiny = DCODR_TINY + (DCODR_SMALL_ENCODER if small_encoder else ()) + (DCODR_GENERATOR_TINY if generator else ())
    reconstruction = frozenset({"train/reconstruction"})
    return ExperimentCase(data, tiny, DCODR_METRICS | metrics | (reconstruction if generator else frozenset()),
                          frozenset() if generator else reconstruction, check)


def _landmarks_are_regressed(metrics: dict) -> None:
    """CelebA's landmarks are regressed: an L1 error, no accuracy and no retrieval."""
    assert not any("landmarks_acc" in key or "retrieval_landmarks" in key for key in metrics)


CASES: dict[str, ExperimentCase] = {
    "nlcl_demo": _nlcl(),
    "nlcl_rain100l": _nlcl(_paired),
    "nlcl_rain100l_cpu": _nlcl(_paired),
    "nlcl_realrain": _nlcl(_root("shared")),
    "nlcl_spa": _nlcl(lambda roots: [f"data.root={roots['spa']}", f"data.splits.rainy_dir={roots['paired']}/input",
                                     f"data.splits.clean_dir={roots['paired']}/target"]),
    "nlcl_paper": _nlcl(_official_folders, frozenset()),
    "nlcl_official": _nlcl(_official_folders, frozenset()),
    "mocov2_cifar": _ssl("cifar", hcsc=False),
    "mocov2_cifar_cpu": _ssl("cifar", hcsc=False),
    "mocov2_imagenet_200ep": _ssl("imagenet", hcsc=False),
    "hcsc_cifar": _ssl("cifar", hcsc=True, small_trunk=False),  # one run keeps the real ResNet-18 CIFAR trunk
    "hcsc_cifar_cpu": _ssl("cifar", hcsc=True),
    "hcsc_imagenet_200ep": _ssl("imagenet", hcsc=True),
    "hcsc_imagenet_multicrop_200ep": _ssl("imagenet", hcsc=True),
    "linear_cifar": _linear_probe(_linear_on("cifar")),
    "linear_imagenet": _linear_probe(_linear_on("imagenet", "model/backbone=resnet18")),
    "semisup_cifar": _semisup("cifar", "model/backbone=resnet18_cifar"),
    "semisup_imagenet_1pct": _semisup("imagenet", "model/backbone=resnet18"),
    "semisup_imagenet_10pct": _semisup("imagenet", "model/backbone=resnet18"),
    "linear_places205": _linear_probe(_linear_on("imagenet", "model/backbone=resnet18")),
    "voc07_svm": ExperimentCase(lambda roots: [f"data.root={roots['voc']}", "data.classes=[cat,dog,car]",
                                               f"model.backbone.checkpoint={roots['imagenet_trunk']}",
                                               "model/backbone=resnet18"],
                                ("data.eval_batch_size=8", "data.num_workers=0",
                                 "callbacks.svm_transfer.costs=[0.1,1.0]"),
                                frozenset({"test/voc07_map", "test/voc07_ap_cat"})),
    "dcodr_shapes": _dcodr(small_encoder=False),
    "dcodr_norec_shapes": _dcodr(generator=False, small_encoder=False),
    "contrastive_shapes": _dcodr(generator=False, small_encoder=False),
    "dcodr_cars3d": _dcodr(_cars3d, metrics=frozenset({"test/official_retrieval_all"})),
    "dcodr_cars3d_cpu": _dcodr(_cars3d),
    "dcodr_norec_cars3d": _dcodr(_cars3d, generator=False),
    "dcodr_norec_cars3d_cpu": _dcodr(_cars3d, generator=False),
    "contrastive_cars3d": _dcodr(_cars3d, generator=False),
    "contrastive_cars3d_cpu": _dcodr(_cars3d, generator=False),
    "dcodr_shapes3d": _dcodr(lambda roots: [f"data.source.path={roots['shapes3d']}"]),
    "dcodr_smallnorb": _dcodr(lambda roots: [f"data.source.path={roots['npz']}",
                                             "data.source.factor_keys=[azimuth,elevation,lighting]"],
                              metrics=frozenset({"test/official_retrieval_azimuth", "test/official_retrieval_all"})),
    "dcodr_celeba": _dcodr(lambda roots: [f"data.source.path={roots['npz']}", "data.min_domain_images=10"],
                           metrics=frozenset({"test/landmarks_l1", "test/landmarks_linear_l1",
                                              "test/landmarks_l1_baseline"}), check=_landmarks_are_regressed),
    "dcodr_edges2shoes": _dcodr(lambda roots: [f"data.source.root={roots['folder']}",
                                               f"data.source.factors_csv={roots['folder'] / 'labels.csv'}"]),
}
