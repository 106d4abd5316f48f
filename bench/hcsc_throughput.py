"""Training throughput of the HCSC (and MoCo v2) Lightning modules against a plain PyTorch MoCo v2 step.

    python bench/hcsc_throughput.py --backbone resnet50 --size 224 --batch 256 --precision bf16 --channels-last
    python bench/hcsc_throughput.py --backbone resnet18 --cifar --size 32 --batch 512 --precision bf16
    python bench/hcsc_throughput.py --device cpu --backbone resnet18 --cifar --size 32 --batch 64 --steps 5

Synthetic device-resident views; HCSC's prototypes (3000/2000/1000, or scaled by --clusters) are filled from random
unit vectors so every selection path runs. The plain step is the textbook MoCo v2 iteration written directly in
PyTorch (query/key encoders, EMA, queue, SGD, autocast) with the same model, batch and precision.
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import timed_steps  # noqa: E402

from lightning_modules.components.backbones import ResNetBackbone  # noqa: E402
from lightning_modules.components.kmeans import hierarchical_kmeans  # noqa: E402
from lightning_modules.hcsc.module import HCSC  # noqa: E402
from lightning_modules.moco.module import MoCoV2  # noqa: E402

PRECISION = {"fp32": ("32-true", None), "bf16": ("bf16-mixed", torch.bfloat16), "fp16": ("16-mixed", torch.float16)}


class Views(Dataset):
    def __init__(self, batch: int, size: int, steps: int, device: str) -> None:
        self.batch = {"views": [torch.randn(batch, 3, size, size, device=device) for _ in range(2)],
                      "index": torch.arange(batch, device=device)}
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> dict:
        return self.batch


class Timer(pl.Callback):
    def __init__(self, warmup: int, device: str) -> None:
        self.warmup, self.device, self.start, self.end = warmup, device, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            if self.device == "cuda":
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.end = time.perf_counter()


def build(args: argparse.Namespace, method: str) -> MoCoV2:
    torch.manual_seed(0)
    backbone = ResNetBackbone(args.backbone, cifar_stem=args.cifar)
    common = dict(queue_size=args.queue, optimizer=functools.partial(torch.optim.SGD, lr=0.03, momentum=0.9,
                                                                     weight_decay=1e-4),
                  channels_last=args.channels_last, projection_hidden=backbone.feature_dim,
                  compile=getattr(args, "compile", False))
    if method == "moco":
        return MoCoV2(backbone, **common)
    model = HCSC(backbone, num_clusters=args.clusters, warmup_epochs=0, **common)
    features = F.normalize(torch.randn(max(args.batch, args.clusters[0] * 2), 128), dim=1)
    model.hierarchy.update(hierarchical_kmeans(features, args.clusters, iterations=3, distributed=False),
                           torch.arange(features.shape[0]), features.shape[0], distributed=False)
    model.on_train_epoch_start = lambda: None  # prototypes are given; the benchmark times the step only
    return model


def lightning_rate(args: argparse.Namespace, method: str) -> float:
    model = build(args, method)
    timer = Timer(args.warmup, args.device)
    trainer = pl.Trainer(accelerator="gpu" if args.device == "cuda" else "cpu", devices=1, max_epochs=1,
                         precision=PRECISION[args.precision][0], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    loader = DataLoader(Views(args.batch, args.size, args.warmup + args.steps, args.device), batch_size=None)
    trainer.fit(model, train_dataloaders=loader)
    return args.batch * args.steps / (timer.end - timer.start)


def plain_rate(args: argparse.Namespace) -> float:
    """The MoCo v2 iteration written directly: no Lightning, no selection."""
    torch.manual_seed(0)
    backbone = ResNetBackbone(args.backbone, cifar_stem=args.cifar)
    head = torch.nn.Sequential(torch.nn.Linear(backbone.feature_dim, backbone.feature_dim), torch.nn.ReLU(),
                               torch.nn.Linear(backbone.feature_dim, 128))
    query = torch.nn.Sequential(backbone, head).to(args.device)
    key = copy.deepcopy(query).requires_grad_(False)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    query.to(memory_format=memory_format)
    key.to(memory_format=memory_format)
    queue = F.normalize(torch.randn(args.queue, 128, device=args.device), dim=1)
    optimizer = torch.optim.SGD(query.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    dtype = PRECISION[args.precision][1]
    scaler = torch.amp.GradScaler(enabled=dtype == torch.float16)
    x_q, x_k = (torch.randn(args.batch, 3, args.size, args.size, device=args.device).contiguous(
        memory_format=memory_format) for _ in range(2))
    pointer = 0

    def step() -> None:
        nonlocal queue, pointer
        with torch.autocast(args.device, dtype=dtype or torch.float32, enabled=dtype is not None):
            q = F.normalize(query(x_q).float(), dim=1)
            with torch.no_grad():
                torch._foreach_mul_(list(key.parameters()), 0.999)
                torch._foreach_add_(list(key.parameters()), list(query.parameters()), alpha=0.001)
                k = F.normalize(key(x_k).float(), dim=1)
        logits = torch.cat(((q * k).sum(1, keepdim=True), q @ queue.T), 1) / 0.2
        loss = F.cross_entropy(logits, torch.zeros(args.batch, dtype=torch.long, device=args.device))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        queue = torch.cat((queue[args.batch:], k.detach()))

    return args.batch * args.steps / timed_steps(step, args.warmup, args.steps, args.device)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--cifar", action="store_true")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--queue", type=int, default=16384)
    parser.add_argument("--clusters", type=int, nargs="+", default=[3000, 2000, 1000])
    parser.add_argument("--precision", choices=sorted(PRECISION), default="bf16")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; {args.backbone}{' (CIFAR stem)' if args.cifar else ''} at {args.size} px, batch "
          f"{args.batch}, {args.precision}, channels_last={args.channels_last}, queue {args.queue}, "
          f"prototypes {args.clusters}")
    plain = plain_rate(args)
    moco = lightning_rate(args, "moco")
    hcsc = lightning_rate(args, "hcsc")
    print(f"plain PyTorch MoCo v2 step: {plain:9.1f} images/s")
    print(f"MoCoV2 Lightning module:    {moco:9.1f} images/s  ({moco / plain:.3f} x plain)")
    print(f"HCSC Lightning module:      {hcsc:9.1f} images/s  ({hcsc / plain:.3f} x plain)")


if __name__ == "__main__":
    main()
