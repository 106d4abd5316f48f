"""NLCL training throughput (images/s) of the Lightning module against a plain PyTorch loop of the same model.

    python bench/nlcl_throughput.py --batch 32 --precision bf16 --steps 30            # GPU
    python bench/nlcl_throughput.py --device cpu --batch 2 --steps 3 --warmup 1         # CPU
    python bench/nlcl_throughput.py ... --compile                                        # torch.compile the nets
    python bench/nlcl_throughput.py ... --official-sampler --batch 1                     # the released sampler loop

Both paths run the official architecture (G_B, G_R: 16 blocks x 32 ch; D: 64 ch) on synthetic 256x256 crops held
on the device, the same losses and optimisers; the plain loop calls the networks and losses directly with
``torch.optim`` and ``torch.autocast`` (no Lightning). The ratio shows what the framework costs.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import timed_steps  # noqa: E402
from nlcl_sampler_speed import official_loop  # noqa: E402

from lightning_modules.nlcl.module import NLCL  # noqa: E402
from lightning_modules.nlcl.networks import LayerGenerator, PatchDiscriminator  # noqa: E402
from lightning_modules.nlcl.sampler import NonLocalSampler  # noqa: E402

PRECISION = {"fp32": ("32-true", None), "bf16": ("bf16-mixed", torch.bfloat16), "fp16": ("16-mixed", torch.float16)}


def build(args: argparse.Namespace) -> NLCL:
    torch.manual_seed(0)
    width = getattr(args, "width", 64)  # 64: the official architecture
    model = NLCL(LayerGenerator(width=width), LayerGenerator(width=width), PatchDiscriminator(base_channels=width),
                 optimizer=functools.partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999)),
                 channels_last=args.channels_last)
    if args.official_sampler:
        for sampler in (model.loc_sampler, model.positive_sampler, model.negative_sampler):
            sampler.__class__ = OfficialSampler
    if args.compile:
        model.G_B = torch.compile(model.G_B)
        model.G_R = torch.compile(model.G_R)
        model.D.model = torch.compile(model.D.model)
    return model


class OfficialSampler(NonLocalSampler):
    """The released per-image loop, one call per sample (what batch > 1 would cost with it)."""

    def __call__(self, guide: torch.Tensor, anchor: torch.Tensor | None = None) -> torch.Tensor:
        groups = []
        for b in range(guide.shape[0]):
            cy = int(torch.randint(self.patch, guide.shape[2] - self.patch + 1, ()))
            cx = int(torch.randint(self.patch, guide.shape[3] - self.patch + 1, ()))
            groups.append(official_loop(guide[b:b + 1].detach().float(), (cy, cx), self.k))
        return torch.stack(groups).to(guide.device)


class Synthetic(Dataset):
    """The same few device-resident batches over and over: the benchmark measures the step, not the loader."""

    def __init__(self, batch: int, crop: int, length: int, device: str) -> None:
        g = torch.Generator(device="cpu").manual_seed(0)
        self.rainy = (torch.rand(batch, 3, crop, crop, generator=g) * 2 - 1).to(device)
        self.clean = (torch.rand(batch, 3, crop, crop, generator=g) * 2 - 1).to(device)
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"rainy": self.rainy, "clean": self.clean}


class Timer(pl.Callback):
    def __init__(self, warmup: int, device: str) -> None:
        self.warmup, self.device, self.start, self.end = warmup, device, 0.0, 0.0

    def _sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self._sync()
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self._sync()
        self.end = time.perf_counter()


def lightning_rate(args: argparse.Namespace) -> float:
    model = build(args)
    data = Synthetic(args.batch, args.crop, args.warmup + args.steps, args.device)
    loader = DataLoader(data, batch_size=None, shuffle=False)
    timer = Timer(args.warmup, args.device)
    trainer = pl.Trainer(accelerator="gpu" if args.device == "cuda" else "cpu", devices=1, max_epochs=1,
                         precision=PRECISION[args.precision][0], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(model, train_dataloaders=loader)
    return args.batch * args.steps / (timer.end - timer.start)


def plain_rate(args: argparse.Namespace) -> float:
    model = build(args).to(args.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam([p for n in (model.G_B, model.G_R, model.loc_heads, model.background_heads,
                                          model.rain_heads) for p in n.parameters()], lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(model.D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    data = Synthetic(args.batch, args.crop, 1, args.device)
    dtype = PRECISION[args.precision][1]
    scaler = torch.amp.GradScaler(enabled=dtype == torch.float16)

    def step() -> None:
        rainy, clean = model.format_input(data.rainy), model.format_input(data.clean)
        with torch.autocast(args.device, dtype=dtype or torch.float32, enabled=dtype is not None):
            background, identity, rain = model.decompose(rainy, clean)
            loss_d = model.discriminator_loss(background, clean)
        opt_d.zero_grad(set_to_none=True)
        scaler.scale(loss_d).backward()
        scaler.step(opt_d)
        with torch.autocast(args.device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss_g, _ = model.generator_loss(rainy, clean, background, identity, rain)
        opt_g.zero_grad(set_to_none=True)
        scaler.scale(loss_g).backward()
        scaler.step(opt_g)
        scaler.update()

    return args.batch * args.steps / timed_steps(step, args.warmup, args.steps, args.device)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--precision", choices=sorted(PRECISION), default="bf16")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--official-sampler", action="store_true")
    parser.add_argument("--skip-plain", action="store_true")
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; batch {args.batch}, {args.crop}^2 crops, {args.precision}, "
          f"channels_last={args.channels_last}, compile={args.compile}, official sampler={args.official_sampler}")
    ours = lightning_rate(args)
    print(f"Lightning module: {ours:8.2f} images/s")
    if not args.skip_plain:
        plain = plain_rate(args)
        print(f"plain PyTorch:    {plain:8.2f} images/s   (Lightning / plain = {ours / plain:.3f})")


if __name__ == "__main__":
    main()
