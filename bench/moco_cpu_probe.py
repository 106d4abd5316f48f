"""Short MoCo v2 runs at CPU scale for choosing lr / t: a plain loop over the real datamodule and model of
``mocov2_cifar_cpu`` (views made batched, as in the experiment), constant lr, then held-out kNN (k = 20).

    python bench/moco_cpu_probe.py steps=400 lr=0.01 model.temperature=0.1
    python bench/moco_cpu_probe.py steps=0                                  # the trunk at random init

Any other ``key=value`` is a Hydra override of the experiment. Prints the mean loss / instance accuracy every 50
steps and the final kNN top-1. (How the CPU experiments' lr 0.01 and t 0.1 were chosen; see the README.)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402,F401  (registers the config resolvers)


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    steps, lr = int(args.pop("steps", "400")), float(args.pop("lr", "0.03"))
    root = args.pop("data.root", str(ROOT.parent / "shared" / "data" / "cifar10"))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=mocov2_cifar_cpu", f"data.root={root}", "data.num_workers=1",
                                          *[f"{k}={v}" for k, v in args.items()]])
    torch.manual_seed(0)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    model = instantiate(cfg.model)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    logs: list[dict[str, float]] = []
    model.log_dict = lambda values, **_: logs.append({k: float(v) for k, v in values.items()})
    batches, start = iter(datamodule.train_dataloader()), time.time()
    for step in range(steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(datamodule.train_dataloader())
            batch = next(batches)
        loss = model.training_step(datamodule.on_after_batch_transfer(batch, 0), step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 49:
            recent = logs[-50:]
            print(step + 1, round(sum(x["train/loss"] for x in recent) / 50, 3),
                  round(sum(x["train/instance_acc"] for x in recent) / 50, 3), f"{time.time() - start:.0f} s")
    model.eval()

    def embed(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [(model.embed(b["image"]), b["label"]) for b in datamodule.feature_dataloader(split)]
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])

    with torch.no_grad():
        bank, bank_labels = embed("train")
        queries, labels = embed("eval")
        top = (queries @ bank.T).topk(20, dim=1)
        votes = torch.zeros(len(queries), 10).scatter_add_(1, bank_labels[top.indices], (top.values / 0.07).exp())
    print(f"kNN top-1 {(votes.argmax(1) == labels).float().mean().item():.4f} after {steps} steps, lr {lr}, {args}")


if __name__ == "__main__":
    main()
