"""A pretrained ResNet trunk out of any checkpoint, in the layouts downstream code loads.

    python eval.py mode=export ckpt_path=<run>/checkpoints/last.ckpt export.format=torchvision
    python eval.py mode=export ckpt_path=moco_v2_200ep_pretrain.pth.tar export.format=detectron2 export.arch=resnet50

Inputs: a contrastlab checkpoint of MoCo v2 / HCSC / linear / semi-supervised runs (``encoder_q.backbone.net.*``,
``backbone.net.*``), or the official MoCo v2 / HCSC release (``module.encoder_q.*``). Only the query encoder's
trunk is taken (the momentum encoder, the projection head and the queue are left behind).

* ``torchvision``: a ``state_dict`` that loads with strict keys into ``torchvision.models.<arch>()``. Its ``fc``
  is the run's classifier when it has one (linear / semi-supervised runs), otherwise a new 1000-way layer
  initialised as the MoCo linear protocol does (weights N(0, 0.01), bias 0), seeded. A CIFAR-stem trunk
  (3x3 ``conv1``, no max-pool) is exported as it is, and the output says which layers to replace first.
* ``detectron2``: the pickle that detectron2's ``DetectionCheckpointer`` reads, with the key mapping of MoCo's
  ``detection/convert-pretrain-to-detectron2.py`` (``stem.conv1``, ``res2``..``res5``, ``convK.norm``,
  ``shortcut``) and ``matching_heuristics``; numpy arrays, no ``fc``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torchvision

from contrastlab.errors import ConfigError, WeightsMismatchError
from lightning_modules.components.weights import read_state_dict, strip_prefixes

FORMATS = ("torchvision", "detectron2")
TRUNK_PREFIXES = ("module.", "encoder_q.", "backbone.", "net.")


def trunk_state_dict(path: str | Path, arch: str, key: str = "ckpt_path") -> tuple[dict[str, torch.Tensor], bool]:
    """The trunk weights of ``arch`` (torchvision names, no ``fc``) in the checkpoint, and whether it has a CIFAR
    stem. Strict: every trunk weight must be found, or the error names what is missing."""
    try:
        wanted = {k: v for k, v in torchvision.models.get_model(arch).state_dict().items() if not k.startswith("fc.")}
    except ValueError:
        raise ConfigError(f"`export.arch`={arch!r} is not a torchvision model name (e.g. resnet50)") from None
    found: dict[str, torch.Tensor] = {}
    for name, value in read_state_dict(path, key).items():
        own = strip_prefixes(name, TRUNK_PREFIXES)
        if own in wanted and own not in found:
            found[own] = value
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise WeightsMismatchError(f"checkpoint '{path}' (config key `{key}`) holds no {arch} trunk: {len(missing)} "
                                   f"of its {len(wanted)} weights are missing, e.g. {missing[:3]}")
    cifar_stem = tuple(found["conv1.weight"].shape[-2:]) == (3, 3)
    for name, value in found.items():
        if tuple(value.shape) != tuple(wanted[name].shape) and not (cifar_stem and name == "conv1.weight"):
            raise WeightsMismatchError(f"checkpoint '{path}' (config key `{key}`): {name} has shape "
                                       f"{tuple(value.shape)}, {arch} expects {tuple(wanted[name].shape)}")
    return found, cifar_stem


def classifier_weights(path: str | Path, key: str, num_classes: int, in_features: int,
                       seed: int) -> dict[str, torch.Tensor]:
    """``fc.weight`` / ``fc.bias``: the run's own classifier if it has one, else a new MoCo-initialised layer."""
    state = read_state_dict(path, key)
    if "classifier.weight" in state and tuple(state["classifier.weight"].shape)[1:] == (in_features,):
        return {"fc.weight": state["classifier.weight"], "fc.bias": state["classifier.bias"]}
    generator = torch.Generator().manual_seed(seed)
    return {"fc.weight": torch.randn(num_classes, in_features, generator=generator) * 0.01,
            "fc.bias": torch.zeros(num_classes)}


def detectron2_key(name: str) -> str:
    """A torchvision ResNet weight name in detectron2's ResNet naming (MoCo's conversion rules)."""
    if "layer" not in name:
        name = "stem." + name
    for stage in (1, 2, 3, 4):
        name = name.replace(f"layer{stage}", f"res{stage + 1}")
    for norm in (1, 2, 3):
        name = name.replace(f"bn{norm}", f"conv{norm}.norm")
    return name.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def export_trunk(path: str | Path, fmt: str, arch: str, out_dir: str | Path, num_classes: int = 1000,
                 seed: int = 0, key: str = "ckpt_path") -> Path:
    """Write the trunk of the checkpoint at ``path`` in layout ``fmt`` below ``out_dir``; return the file."""
    if fmt not in FORMATS:
        raise ConfigError(f"`export.format` must be one of {', '.join(FORMATS)}, got {fmt!r}")
    trunk, cifar_stem = trunk_state_dict(path, arch, key)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "torchvision":
        in_features = torchvision.models.get_model(arch).fc.in_features
        weights = {**trunk, **classifier_weights(path, key, num_classes, in_features, seed)}
        target = out_dir / f"{arch}_torchvision.pth"
        torch.save({k: v.detach().clone().contiguous() for k, v in weights.items()}, target)
    else:
        model = {detectron2_key(k): v.detach().cpu().numpy() for k, v in trunk.items()}
        target = out_dir / f"{arch}_detectron2.pkl"
        with target.open("wb") as handle:  # detectron2 reads this pickle layout (numpy arrays only)
            pickle.dump({"model": model, "__author__": "contrastlab", "matching_heuristics": True}, handle)
    stem = (" (CIFAR stem: replace conv1 by a 3x3 stride-1 conv and maxpool by Identity before loading)"
            if cifar_stem else "")
    print(f"[contrastlab] exported the {arch} trunk ({len(trunk)} tensors) as {fmt}: {target}{stem}")
    return target
