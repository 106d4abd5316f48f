"""The sections of ``bench/gpu_suite.py``, one per process: ``python bench/gpu_sections.py <name> <result.json>``.

Every section measures the project's code and its plain-PyTorch reference in the same process, interleaved where
both exist, warm-up excluded, CUDA-synchronised (``common.timed_steps`` and the Lightning timers of the
throughput benches). ``--smoke``: tiny sizes on the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))


def device_name(smoke: bool) -> str:
    if torch.cuda.is_available() and not smoke:
        return torch.cuda.get_device_name()
    return f"CPU, {torch.get_num_threads()} threads"


def _device(smoke: bool) -> str:
    return "cuda" if torch.cuda.is_available() and not smoke else "cpu"


def _moco_args(smoke: bool, **overrides) -> SimpleNamespace:
    if smoke:
        base = dict(device="cpu", backbone="resnet18", cifar=True, size=32, batch=8, queue=64, clusters=[16, 8, 4],
                    precision="fp32", channels_last=False, steps=2, warmup=1, compile=False)
    else:
        base = dict(device=_device(smoke), backbone="resnet50", cifar=False, size=224, batch=256, queue=16384,
                    clusters=[3000, 2000, 1000], precision="bf16", channels_last=True, steps=20, warmup=5,
                    compile=False)
    return SimpleNamespace(**{**base, **overrides})


def moco_hcsc(smoke: bool) -> dict:
    import hcsc_throughput as bench

    args = _moco_args(smoke)
    plain = bench.plain_rate(args)
    moco, hcsc = bench.lightning_rate(args, "moco"), bench.lightning_rate(args, "hcsc")
    plain_again = bench.plain_rate(args)  # interleaved: plain, modules, plain (drift shows as a spread)
    reference = (plain + plain_again) / 2
    figures = {"plain images/s": reference, "plain spread": abs(plain - plain_again) / reference,
               "MoCoV2 x plain": moco / reference, "HCSC x plain": hcsc / reference}
    if not smoke:
        compiled = _moco_args(smoke, compile=True, warmup=10)
        figures["MoCoV2 compiled x plain"] = bench.lightning_rate(compiled, "moco") / reference
        figures["HCSC compiled x plain"] = bench.lightning_rate(compiled, "hcsc") / reference
    ratios = [v for k, v in figures.items() if k.endswith("x plain")]
    return {"figures": figures, "meets_goal": all(r >= 0.95 for r in ratios), "hcsc_images_per_s": hcsc}


def nlcl(smoke: bool) -> dict:
    import nlcl_throughput as bench

    args = SimpleNamespace(device=_device(smoke), batch=1 if smoke else 32, crop=32 if smoke else 256,
                           precision="fp32" if smoke else "bf16", steps=1 if smoke else 10, warmup=1 if smoke else 3,
                           channels_last=not smoke, compile=False, official_sampler=False,
                           width=8 if smoke else 64)
    lightning = bench.lightning_rate(args)
    plain = bench.plain_rate(args)
    return {"figures": {"module images/s": lightning, "plain images/s": plain, "module x plain": lightning / plain},
            "meets_goal": lightning >= 40}


def kmeans(smoke: bool) -> dict:
    from callbacks.evaluation.neighbours import knn_predict_many
    from lightning_modules.components.kmeans import hierarchical_kmeans

    device = _device(smoke)
    n, clusters, queries = (4000, [64, 32, 16], 500) if smoke else (1_281_167, [3000, 2000, 1000], 50_000)
    x = F.normalize(torch.randn(n, 128, device=device), dim=1)
    hierarchical_kmeans(x[: 20 * clusters[0]], clusters, iterations=2, distributed=False)  # warm-up
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    hierarchical_kmeans(x, clusters, iterations=20, restarts=1, distributed=False)
    sync()
    epoch = time.perf_counter() - start
    labels = torch.randint(0, 1000, (n,), device=device)
    q = F.normalize(torch.randn(queries, 128, device=device), dim=1)
    knn_predict_many(x, labels, q[:100], 1000, [20, 200])
    sync()
    start = time.perf_counter()
    knn_predict_many(x, labels, q, 1000, [20, 200])
    sync()
    knn = time.perf_counter() - start
    bare = time.perf_counter()
    for i in range(0, queries, 1024):
        (q[i:i + 1024] @ x.T).max(1)
    sync()
    bare = time.perf_counter() - bare
    return {"figures": {"k-means epoch s": epoch, "kNN over bank s": knn, "kNN x bare similarity+max": knn / bare,
                        "points": n, "queries": queries}, "meets_goal": epoch < 1.0 if not smoke else None}


def dcodr(smoke: bool) -> dict:
    import pytorch_lightning as pl
    from common import timed_steps
    from torch.utils.data import DataLoader

    from lightning_modules.components.backbones import ResNetBackbone
    from lightning_modules.dcodr.losses import ReconstructionLoss
    from lightning_modules.dcodr.module import DCoDR
    from lightning_modules.dcodr.networks import ContentEncoder, DomainGenerator

    device = _device(smoke)
    size, batch, steps, warmup = (16, 8, 2, 1) if smoke else (64, 128, 20, 5)
    precision = ("32-true", None) if smoke else ("bf16-mixed", torch.bfloat16)

    def build() -> DCoDR:
        torch.manual_seed(0)
        encoder = ContentEncoder(ResNetBackbone("resnet18" if smoke else "resnet50"), 128)
        generator = lambda **kw: DomainGenerator(channels=16 if smoke else 256, **kw)  # noqa: E731
        return DCoDR(encoder, generator, ReconstructionLoss(perceptual=False), num_domains=4, image_size=size,
                     channels_last=not smoke)

    data = {"image": torch.rand(batch, 3, size, size, device=device),
            "positive": torch.rand(batch, 3, size, size, device=device),
            "domain": torch.arange(batch, device=device) % 4}

    class Batches(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return steps + warmup

        def __getitem__(self, i: int) -> dict:
            return data

    import hcsc_throughput

    timer = hcsc_throughput.Timer(warmup, device)
    trainer = pl.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_epochs=1,
                         precision=precision[0], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[timer])
    trainer.fit(build(), train_dataloaders=DataLoader(Batches(), batch_size=None))
    lightning = steps / (timer.end - timer.start)
    model = build().to(device)
    optimizer = torch.optim.Adam(model.parameter_groups(), betas=(0.5, 0.999))

    def step() -> None:
        with torch.autocast(device, dtype=precision[1] or torch.float32, enabled=precision[1] is not None):
            z, z_positive = model.content(data["image"]), model.content(data["positive"])
            loss = model.contrastive(z, z_positive, data["domain"])
            reconstruction = model.generator(F.normalize(z.float(), dim=1), data["domain"])
            loss = loss + 0.3 * model.reconstruction(reconstruction, data["image"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    plain = steps / timed_steps(step, warmup, steps, device)
    return {"figures": {"module steps/s": lightning, "plain steps/s": plain, "module x plain": lightning / plain,
                        "batch": batch}, "meets_goal": lightning / plain >= 0.95}


def jpeg(smoke: bool) -> dict:
    """HCSC trained from JPEG files through the project's data path (bytes decoded on the device), against the
    synthetic-input rate of the same model, batch and precision measured in this process."""
    import hcsc_throughput as bench
    import numpy as np
    import pytorch_lightning as pl
    from PIL import Image

    from datamodules.device_augment import DeviceViews
    from datamodules.imagefolder import ImageDataModule

    args = _moco_args(smoke)
    count, workers = (32, 0) if smoke else (4096, 16)
    folder = Path(tempfile.mkdtemp(prefix="gpu_suite_jpegs_"))
    rng = np.random.default_rng(0)
    for i in range(count):
        target = folder / "train" / f"class_{i % 8}"
        target.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        Image.fromarray(base).resize((500, 375), Image.BILINEAR).save(target / f"{i}.jpg", quality=90)
    rates = {}
    for decode_on_device in (True, False):
        views = DeviceViews(specs=[{"size": args.size, "count": 2}], base_size=args.size + args.size // 7)
        datamodule = ImageDataModule(str(folder), val_dir=None, device_views=views, batch_size=args.batch,
                                     num_workers=workers, decode_on_device=decode_on_device, verify=False)
        model = bench.build(args, "hcsc")
        timer = bench.Timer(args.warmup, args.device)
        steps = args.warmup + args.steps
        trainer = pl.Trainer(accelerator="gpu" if args.device == "cuda" else "cpu", devices=1, max_steps=steps,
                             limit_train_batches=steps, precision=bench.PRECISION[args.precision][0], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             callbacks=[timer], max_epochs=-1)
        trainer.fit(model, datamodule=datamodule)
        rates["device decode" if decode_on_device else "worker decode"] = args.batch * args.steps / (
            timer.end - timer.start)
    synthetic = bench.lightning_rate(args, "hcsc")
    figures = {f"{k} images/s": v for k, v in rates.items()}
    figures.update({f"{k} x synthetic": v / synthetic for k, v in rates.items()})
    figures["synthetic images/s"] = synthetic
    return {"figures": figures, "meets_goal": max(rates.values()) / synthetic >= 0.8}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("section", choices=["moco_hcsc", "nlcl", "kmeans", "dcodr", "jpeg"])
    parser.add_argument("result", type=Path)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    result = globals()[args.section](args.smoke)
    if args.smoke:  # tiny sizes on a CPU say nothing about the goals
        result["meets_goal"] = None
    result["device"] = device_name(args.smoke)
    args.result.write_text(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
