"""Hierarchical spherical k-means time: N x 128 unit features into 3000 / 2000 / 1000 prototypes.

    python bench/kmeans_speed.py --n 1281167 --device cuda            # ImageNet scale on a GPU
    python bench/kmeans_speed.py --n 100000 --device cpu --iterations 5

Reports one assignment pass, one full bottom-level iteration and the whole E-step (all levels, ``--restarts``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_modules.components.kmeans import hierarchical_kmeans, spherical_kmeans  # noqa: E402


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_281_167)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, nargs="+", default=[3000, 2000, 1000])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    x = F.normalize(torch.randn(args.n, args.dim, device=args.device), dim=1)
    spherical_kmeans(x[:10_000], 100, iterations=1, distributed=False)  # warm-up
    sync(args.device)
    start = time.perf_counter()
    spherical_kmeans(x, args.clusters[0], iterations=1, distributed=False)
    sync(args.device)
    one = time.perf_counter() - start
    start = time.perf_counter()
    hierarchical_kmeans(x, args.clusters, iterations=args.iterations, restarts=args.restarts, distributed=False)
    sync(args.device)
    total = time.perf_counter() - start
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; {args.n:,} x {args.dim} into {args.clusters}, {args.iterations} iterations, "
          f"{args.restarts} restart(s)")
    print(f"first level, 1 iteration (+ final assignment): {one:.3f} s")
    print(f"whole hierarchy (E-step clustering):            {total:.3f} s")


if __name__ == "__main__":
    main()
