"""Non-local sampler speed: the vectorised sampler against the official algorithm written as a plain loop.

    python bench/nlcl_sampler_speed.py [--device cuda] [--repeats 5]

Both run on the same 256x256 input with the same anchors; the loop builds every candidate patch with
``torch.cat`` as ``PatchSampleNonlocalOneGroup`` does (batch 1, one call per image). Prints seconds per call and
the speed-up, for the three groups an NLCL iteration draws (B^ k=8 and R^ k=128 on the image, LocContra k=256 on
32-channel G_B features), and for a batch of 8 images (the loop version must run once per image).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import timed_steps  # noqa: E402

from lightning_modules.nlcl.sampler import NonLocalSampler  # noqa: E402


def official_loop(guide: torch.Tensor, anchor: tuple[int, int], k: int, patch: int = 16, search: int = 40):
    """The released algorithm: candidate locations and patches accumulated by concatenation, then topk."""
    _, _, height, width = guide.shape
    half, search_half = patch // 2, search // 2
    cy, cx = anchor
    start_h = half if cy - search_half - half < 0 else cy - search_half
    start_w = half if cx - search_half - half < 0 else cx - search_half
    end_h = height - half if cy + search_half + half > height else cy + search_half
    end_w = width - half if cx + search_half + half > width else cx + search_half
    reference = guide[:, :, cy - half:cy + half, cx - half:cx + half]
    patches = torch.zeros((guide.shape[0], guide.shape[1], patch, patch), device=guide.device)
    locs = torch.zeros((1, 2), device=guide.device)
    for y in range(start_h, end_h):
        for x in range(start_w, end_w):
            locs = torch.cat((locs, torch.tensor([[y, x]], device=guide.device)), 0)
            patches = torch.cat((patches, guide[:, :, y - half:y + half, x - half:x + half]), 0)
    locs, patches = locs[1:], patches[1:]
    distance = (patches - reference).pow(2).sum((1, 2, 3)).sqrt()
    return locs[distance.topk(k, largest=False).indices].long()


def timed(fn, repeats: int, device: str) -> float:
    """Seconds per call after one untimed call."""
    return timed_steps(fn, 1, repeats, device) / repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    groups = (("B^ group, image", 3, 8), ("R^ group, image", 3, 128), ("LocContra, features", 32, 256))
    for label, channels, k in groups:
        guide = torch.randn(1, channels, 256, 256, device=args.device)
        anchor = torch.tensor([[128, 100]], device=args.device)
        sampler = NonLocalSampler(k)
        ours = {tuple(c) for c in sampler(guide, anchor)[0].tolist()}
        theirs = {tuple(c) for c in official_loop(guide, (128, 100), k).tolist()}
        if ours != theirs:
            raise SystemExit(f"{label}: the vectorised group differs from the loop's")
        batch = torch.randn(8, channels, 256, 256, device=args.device)
        loop = timed(functools.partial(official_loop, guide, (128, 100), k), args.repeats, args.device)
        fast = timed(functools.partial(sampler, guide, anchor), max(args.repeats, 20), args.device)
        fast8 = timed(functools.partial(sampler, batch), max(args.repeats, 20), args.device)
        rows.append((label, loop, fast, loop / fast, 8 * loop / fast8))
    print(f"device: {args.device}, threads: {torch.get_num_threads()}; groups identical to the loop's: yes")
    print(f"{'group':22s} {'loop s/call':>12s} {'ours s/call':>12s} {'speed-up':>9s} {'speed-up, batch 8':>18s}")
    for label, loop, fast, ratio, ratio8 in rows:
        print(f"{label:22s} {loop:12.4f} {fast:12.5f} {ratio:8.0f}x {ratio8:17.0f}x")


if __name__ == "__main__":
    main()
