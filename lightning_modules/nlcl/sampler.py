"""Non-local patch sampling (NLCL Sec. 3.2; official ``PatchSampleNonlocalOneGroup``), vectorised.

Per sample: pick an anchor centre uniformly in [P, H - P] (P = patch size), compare the anchor's P x P patch
with every candidate centre of a ``search`` x ``search`` window around it (stride 1, centres kept inside
[P/2, H - P/2)), and keep the ``k`` most similar by Euclidean distance over channels x P x P (anchor included).

The official code builds ~1600 candidate patches with ``torch.cat`` in a Python double loop, for batch 1 only.
Here the squared distances of all candidates come from one grouped convolution per batch
(``||c||^2 - 2 <c, a> + ||a||^2``), each sample gets its own anchor, and ``topk`` picks the group; no loop over
samples or patches and no host synchronisation.

Modes (the paper figure's variants, docs/references.md, N4): ``similar`` (official),
``dissimilar`` (anchor + the k-1 most different candidates of the window, "reverse non-local"), ``random`` (k distinct
random centres over the image, CUT's sampler).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

SamplingMode = Literal["similar", "dissimilar", "random"]


class NonLocalSampler:
    """Choose ``k`` patch centres per sample from a guide tensor (the image or a feature map).

    Args:
        num_patches: k, the size of the group (8 positives, 128 negatives, 256 LocContra locations officially).
        patch_size: side of the compared patches (16).
        search_size: side of the candidate window around the anchor (40).
        mode: ``similar`` | ``dissimilar`` | ``random``.
        exclusion_radius: drop candidates whose Chebyshev offset from the anchor is in (0, r]; the official
            positives are in practice the anchor and its 1-2 px shifts (docs/references.md, N5). 0 = official.
    """

    def __init__(
        self,
        num_patches: int,
        patch_size: int = 16,
        search_size: int = 40,
        mode: SamplingMode = "similar",
        exclusion_radius: int = 0,
    ) -> None:
        if mode not in ("similar", "dissimilar", "random"):
            raise ValueError(f"sampling mode must be similar, dissimilar or random, got {mode!r}")
        if patch_size % 2 or search_size % 2:
            raise ValueError("patch_size and search_size must be even (official 16 and 40)")
        if exclusion_radius < 0:
            raise ValueError("exclusion_radius must be >= 0")
        self.k, self.patch, self.search, self.mode = num_patches, patch_size, search_size, mode
        self.exclusion_radius = exclusion_radius

    def _check(self, height: int, width: int) -> None:
        if min(height, width) < 2 * self.patch:
            raise ValueError(f"crops of {height}x{width} are too small for {self.patch} px patches "
                             f"(need >= {2 * self.patch})")
        half, search_half = self.patch // 2, self.search // 2
        if self.mode == "random":
            available = (height - self.patch) * (width - self.patch)
        else:
            # Fewest valid centres: an anchor in a corner, (P, P), whose window is clipped on two sides.
            def span(size: int) -> int:
                return min(size - half, self.patch + search_half) - max(half, self.patch - search_half)

            available = span(height) * span(width) - self._excluded_count()
        if available < self.k:
            raise ValueError(
                f"only {available} candidate centres for groups of {self.k} on {height}x{width} inputs "
                f"(patch {self.patch}, window {self.search}); use larger crops or fewer patches"
            )

    def _excluded_count(self) -> int:
        r = self.exclusion_radius
        return (2 * r + 1) ** 2 - 1 if r else 0

    @torch.no_grad()
    def __call__(self, guide: torch.Tensor, anchor: torch.Tensor | None = None) -> torch.Tensor:
        """Centres ``(B, k, 2)`` as (row, col) in the guide's pixel grid, anchor first for non-random modes.

        ``anchor`` (B, 2) fixes the anchor centres (tests, benchmarks); by default they are drawn at random.
        """
        batch, _, height, width = guide.shape
        self._check(height, width)
        device = guide.device
        half, search_half = self.patch // 2, self.search // 2
        if self.mode == "random":
            rows = torch.arange(half, height - half, device=device)
            cols = torch.arange(half, width - half, device=device)
            scores = torch.rand(batch, rows.numel() * cols.numel(), device=device)
            index = scores.topk(self.k, dim=1).indices
            return torch.stack((rows[index // cols.numel()], cols[index % cols.numel()]), dim=-1)

        # Anchor centres, inclusive range [P, H - P] as the official randint(16, 240) on 256 crops.
        if anchor is None:
            anchor = torch.stack(
                (torch.randint(self.patch, height - self.patch + 1, (batch,), device=device),
                 torch.randint(self.patch, width - self.patch + 1, (batch,), device=device)),
                dim=-1,
            )
        distances = self.candidate_distances(guide, anchor)  # (B, S, S), S = search
        offsets = torch.arange(self.search, device=device) - search_half
        cand_rows = anchor[:, 0, None] + offsets  # (B, S)
        cand_cols = anchor[:, 1, None] + offsets
        valid = ((cand_rows >= half) & (cand_rows < height - half))[:, :, None] & (
            (cand_cols >= half) & (cand_cols < width - half)
        )[:, None, :]
        if self.exclusion_radius:
            cheb = torch.maximum(offsets.abs()[:, None], offsets.abs()[None, :])
            valid = valid & ~((cheb > 0) & (cheb <= self.exclusion_radius))
        fill = float("inf") if self.mode == "similar" else float("-inf")
        distances = distances.masked_fill(~valid, fill)
        # The anchor is always a member of its own group (distance 0 in the official code).
        distances[:, search_half, search_half] = -1.0 if self.mode == "similar" else float("inf")
        index = distances.flatten(1).topk(self.k, dim=1, largest=self.mode == "dissimilar").indices
        rows = torch.gather(cand_rows, 1, index // self.search)
        cols = torch.gather(cand_cols, 1, index % self.search)
        return torch.stack((rows, cols), dim=-1)

    def candidate_distances(self, guide: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """Euclidean distance between the anchor patch and every window candidate: ``(B, S, S)``.

        Entry (i, j) is the candidate centred at anchor + (i - S/2, j - S/2). Computed in fp32.
        """
        batch, channels, _, _ = guide.shape
        half, search_half, patch = self.patch // 2, self.search // 2, self.patch
        span = self.search + patch  # window of pixels covering every candidate patch
        pad = search_half + half
        padded = F.pad(guide if guide.dtype == torch.float64 else guide.float(), (pad, pad, pad, pad))
        # Window of sample b starts at padded (anchor_row, anchor_col): rows anchor-S/2-P/2 .. in image coordinates.
        ar = torch.arange(span, device=guide.device)
        rows = (anchor[:, 0, None] + ar)[:, :, None]  # (B, span, 1)
        cols = (anchor[:, 1, None] + ar)[:, None, :]  # (B, 1, span)
        b = torch.arange(batch, device=guide.device)[:, None, None]
        window = padded.permute(0, 2, 3, 1)[b, rows, cols].permute(0, 3, 1, 2)  # (B, C, span, span)
        anchor_patch = window[:, :, search_half:search_half + patch, search_half:search_half + patch]
        cross = F.conv2d(window.reshape(1, batch * channels, span, span), anchor_patch, groups=batch)[0]
        energy = F.avg_pool2d(window.pow(2).sum(1, keepdim=True), patch, stride=1)[:, 0] * (patch * patch)
        anchor_energy = anchor_patch.pow(2).flatten(1).sum(1)[:, None, None]
        squared = (energy - 2 * cross + anchor_energy)[:, : self.search, : self.search]
        return squared.clamp_min(0).sqrt()


def gather_features(feature: torch.Tensor, centres: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Feature vectors at patch centres: ``(B, C, h, w)`` x ``(B, k, 2)`` -> ``(B, k, C)``.

    Centres given on the ``image_size`` grid are mapped to this level by floor(y * h / H), floor(x * w / W):
    each level by its own size (the official code divides by a hard-coded 256, docs/references.md, N7).
    """
    batch, channels, h, w = feature.shape
    rows = torch.div(centres[..., 0] * h, image_size[0], rounding_mode="floor")
    cols = torch.div(centres[..., 1] * w, image_size[1], rounding_mode="floor")
    flat_index = (rows * w + cols)[:, None, :].expand(batch, channels, -1)
    return torch.gather(feature.flatten(2), 2, flat_index).transpose(1, 2)
