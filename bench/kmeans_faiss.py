"""k-means and kNN against faiss-cpu on the same random unit vectors and the same thread count.

    pip install faiss-cpu   # optional: a comparison only, never a dependency of training
    python bench/kmeans_faiss.py --n 100000 --clusters 3000 --threads 2

Reports, each as the median of ``--repeats`` interleaved runs: one assignment pass (ours and faiss' exact L2
search), a bare matmul of the same shape (the floor), one Lloyd iteration, 20 iterations of an upper level
(3000 centroids into 2000), the kNN monitor (one top-200 pass serving k = 20 and 200) against faiss'
inner-product search, and the mean cosine to the assigned centroid for both (equal quality).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from callbacks.evaluation.neighbours import knn_predict_many  # noqa: E402
from lightning_modules.components.kmeans import _assign, default_chunk, kmeans  # noqa: E402


def seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=3000)
    parser.add_argument("--upper", type=int, default=2000)
    parser.add_argument("--bank", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(args.n, args.dim, generator=g), dim=1)
    centroids = x[torch.randperm(args.n, generator=g)[: args.clusters]].clone()
    bias = -0.5 * centroids.pow(2).sum(1)
    rows = {}
    rows["matmul (floor)"] = seconds(lambda: x @ centroids.T, args.repeats)
    rows["assignment pass: ours"] = seconds(lambda: _assign(x, centroids, default_chunk(x.device), bias),
                                            args.repeats)
    # Per Lloyd iteration: (3 iterations - 1 iteration) / 2, so initialisation and the final pass cancel out.
    rows["one Lloyd iteration: ours"] = (seconds(lambda: kmeans(x, args.clusters, iterations=3, distributed=False),
                                                 args.repeats)
                                         - seconds(lambda: kmeans(x, args.clusters, iterations=1, distributed=False),
                                                   args.repeats)) / 2
    upper_points = F.normalize(torch.randn(args.clusters, args.dim, generator=g), dim=1)
    rows["upper level, 20 iterations: ours"] = seconds(
        lambda: kmeans(upper_points, args.upper, iterations=20, distributed=False), args.repeats)
    rows["upper level, convergence stop: ours"] = seconds(
        lambda: kmeans(upper_points, args.upper, iterations=20, distributed=False, tol=1e-4), args.repeats)
    bank = F.normalize(torch.randn(args.bank, args.dim, generator=g), dim=1)
    labels = torch.randint(0, 10, (args.bank,), generator=g)
    queries = F.normalize(torch.randn(args.queries, args.dim, generator=g), dim=1)
    rows["kNN k=20,200: ours"] = seconds(lambda: knn_predict_many(bank, labels, queries, 10, [20, 200]), args.repeats)
    ours_index, _ = _assign(x, centroids, 65536, bias)
    quality = {"ours": float((x * F.normalize(centroids, dim=1)[ours_index]).sum(1).mean())}
    try:
        import faiss
    except ImportError:
        faiss = None
        print("faiss-cpu is not installed: ours only")
    if faiss is not None:
        faiss.omp_set_num_threads(args.threads)
        xs, cs = x.numpy(), centroids.numpy()

        def faiss_assign():
            index = faiss.IndexFlatL2(args.dim)
            index.add(cs)
            return index.search(xs, 1)

        rows["assignment pass: faiss"] = seconds(faiss_assign, args.repeats)

        def faiss_iteration(points, k, niter):
            km = faiss.Kmeans(args.dim, k, niter=niter, seed=0, max_points_per_centroid=10**9)
            km.train(points)
            return km

        three = seconds(lambda: faiss_iteration(xs, args.clusters, 3), args.repeats)
        one = seconds(lambda: faiss_iteration(xs, args.clusters, 1), args.repeats)
        rows["one Lloyd iteration: faiss"] = (three - one) / 2
        rows["upper level, 20 iterations: faiss"] = seconds(
            lambda: faiss_iteration(upper_points.numpy(), args.upper, 20), args.repeats)

        def faiss_knn():
            index = faiss.IndexFlatIP(args.dim)
            index.add(bank.numpy())
            return index.search(queries.numpy(), 200)

        rows["kNN k=20,200: faiss"] = seconds(faiss_knn, args.repeats)
        _, found = faiss_assign()
        quality["faiss"] = float((x * F.normalize(centroids, dim=1)[torch.from_numpy(found[:, 0])]).sum(1).mean())
    print(f"{args.n:,} x {args.dim} into {args.clusters}; upper {args.clusters} -> {args.upper}; kNN "
          f"{args.queries:,} queries x {args.bank:,} bank; {args.threads} threads; median of {args.repeats}")
    for name, value in rows.items():
        print(f"  {name:40s} {value * 1000:9.1f} ms")
    for kind in ("assignment pass", "one Lloyd iteration", "upper level, 20 iterations", "kNN k=20,200"):
        if f"{kind}: faiss" in rows:
            print(f"  {kind}: ours / faiss = {rows[f'{kind}: ours'] / rows[f'{kind}: faiss']:.2f}x")
    if "upper level, 20 iterations: faiss" in rows:
        ratio = rows["upper level, convergence stop: ours"] / rows["upper level, 20 iterations: faiss"]
        print(f"  upper level, ours with tol=1e-4 / faiss = {ratio:.2f}x")
    print(f"  ours assignment / matmul = {rows['assignment pass: ours'] / rows['matmul (floor)']:.2f}x")
    print(f"  mean cosine to the assigned centroid: {quality}")
    if args.out:
        args.out.write_text(json.dumps({"seconds": rows, "quality": quality, "args": vars(args) | {"out": None}},
                                       indent=2))


if __name__ == "__main__":
    main()
