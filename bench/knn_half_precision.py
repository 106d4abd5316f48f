"""The kNN monitor's memory bank in half precision: how often the top-k neighbours and the kNN accuracy change.

    python bench/knn_half_precision.py --checkpoint <mocov2_cifar_cpu last.ckpt> [--data ../shared/data/cifar10]

Embeds CIFAR-10 with a CPU-scale MoCo v2 trunk (the conv trunk of ``mocov2_cifar_cpu``): the bank is the 8,000
images left after the 2,000 test images are held out, the queries are those 2,000. For each bank dtype it prints
the share of queries whose top-20 neighbour set equals the fp32 one, the kNN top-1 (k = 20, T = 0.07) and the
bytes a rank holds for an ImageNet-size bank (1.28M x 2048 on 8 ranks, ``knn_memory_bytes``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callbacks.evaluation.neighbours import knn_memory_bytes, knn_vote, normalise_rows, sharded_topk  # noqa: E402
from datamodules.augmentations import eval_transform  # noqa: E402
from datamodules.imagefolder import ImageDataModule  # noqa: E402
from lightning_modules.components.backbones import ConvBackbone  # noqa: E402

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


@torch.no_grad()
def embed(trunk: torch.nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    features, labels = [], []
    for batch in loader:
        features.append(F.normalize(trunk(batch["image"]), dim=1))
        labels.append(batch["label"])
    return torch.cat(features), torch.cat(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = ImageDataModule(args.data, train_dir="test", val_dir=None, holdout_fraction=0.2, num_workers=0,
                           eval_batch_size=500, eval_transform=eval_transform(resize=None, crop=32, mean=MEAN, std=STD))
    trunk = ConvBackbone(checkpoint=args.checkpoint).eval()
    bank, bank_labels = embed(trunk, data.feature_dataloader("train"))
    queries, labels = embed(trunk, data.feature_dataloader("eval"))
    reference = None
    print(f"bank {tuple(bank.shape)}, {queries.shape[0]} queries")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        sims, neighbours = sharded_topk(bank.to(dtype), bank_labels, queries, 20)
        _, index = (F.normalize(queries, dim=1) @ normalise_rows(bank.to(dtype)).float().T).topk(20)  # as there
        top1 = float((knn_vote(sims, neighbours, 10, [20])[20].argmax(1) == labels).float().mean())
        same = 1.0 if reference is None else float((index.sort(1).values == reference).all(1).float().mean())
        reference = index.sort(1).values if reference is None else reference
        bytes_rank = knn_memory_bytes(1_281_167 // 8, 50_000, 2048, 200, 8, bank_bytes=bank.to(dtype).element_size())
        print(f"{str(dtype):15s} top-20 set equal to fp32: {same:.4f}  kNN top-1 {top1:.4f}  "
              f"ImageNet bank per rank {bytes_rank / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
