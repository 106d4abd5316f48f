"""The vectorised non-local sampler against the official algorithm run as a brute-force loop."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.nlcl.sampler import NonLocalSampler, gather_features


def official_group(guide: torch.Tensor, anchor: tuple[int, int], k: int, patch: int = 16, search: int = 40):
    """``PatchSampleNonlocalOneGroup`` for one image, as an explicit loop over candidate centres.

    Returns the k nearest centres (anchor included) and the distance of every candidate.
    """
    _, height, width = guide.shape
    half, search_half = patch // 2, search // 2
    cy, cx = anchor
    start_h = half if cy - search_half - half < 0 else cy - search_half
    start_w = half if cx - search_half - half < 0 else cx - search_half
    end_h = height - half if cy + search_half + half > height else cy + search_half
    end_w = width - half if cx + search_half + half > width else cx + search_half
    reference = guide[:, cy - half:cy + half, cx - half:cx + half]
    distances = {}
    for y in range(start_h, end_h):
        for x in range(start_w, end_w):
            candidate = guide[:, y - half:y + half, x - half:x + half]
            distances[(y, x)] = float(((candidate - reference) ** 2).sum().sqrt())
    nearest = sorted(distances, key=distances.get)[:k]
    return nearest, distances


@pytest.mark.parametrize("size", [(64, 64), (80, 56), (256, 256)])
def test_distances_and_groups_match_the_official_loop(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    h, w = size
    guide = torch.randn(2, 3, h, w, dtype=torch.float64)
    anchors = torch.tensor([[16, 16], [h - 16, w // 2]])
    sampler = NonLocalSampler(num_patches=24)
    centres = sampler(guide, anchor=anchors)
    dist = sampler.candidate_distances(guide, anchors)
    for b in range(2):
        nearest, distances = official_group(guide[b], tuple(anchors[b].tolist()), 24)
        assert [tuple(c) for c in centres[b].tolist()] == nearest
        for (y, x), d in distances.items():
            i, j = y - anchors[b, 0].item() + 20, x - anchors[b, 1].item() + 20
            assert dist[b, i, j].item() == pytest.approx(d, abs=1e-6)


def test_each_sample_gets_its_own_random_anchor_in_range() -> None:
    torch.manual_seed(1)
    guide = torch.randn(64, 3, 48, 48)
    centres = NonLocalSampler(num_patches=8)(guide)
    anchors = centres[:, 0]
    assert anchors.min() >= 16 and anchors.max() <= 48 - 16
    assert len({tuple(a) for a in anchors.tolist()}) > 10
    # Every member stays within the search window and the valid centre range.
    offsets = (centres - anchors[:, None]).abs()
    assert offsets.max() <= 20
    assert centres.min() >= 8 and centres.max() < 48 - 8


def test_dissimilar_mode_takes_the_farthest_candidates() -> None:
    torch.manual_seed(2)
    guide = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    anchor = torch.tensor([[32, 32]])
    centres = NonLocalSampler(num_patches=10, mode="dissimilar")(guide, anchor=anchor)
    _, distances = official_group(guide[0], (32, 32), 10)
    farthest = sorted(distances, key=distances.get, reverse=True)[:9]
    assert tuple(centres[0, 0].tolist()) == (32, 32)
    assert {tuple(c) for c in centres[0, 1:].tolist()} == set(farthest)


def test_random_mode_draws_distinct_valid_centres() -> None:
    torch.manual_seed(3)
    centres = NonLocalSampler(num_patches=200, mode="random")(torch.randn(3, 3, 40, 40))
    for b in range(3):
        assert len({tuple(c) for c in centres[b].tolist()}) == 200
    assert centres.min() >= 8 and centres.max() < 32


def test_exclusion_radius_removes_near_duplicates_but_keeps_the_anchor() -> None:
    torch.manual_seed(4)
    guide = torch.randn(4, 3, 64, 64)
    centres = NonLocalSampler(num_patches=8, exclusion_radius=4)(guide)
    chebyshev = (centres[:, 1:] - centres[:, :1]).abs().amax(-1)
    assert (chebyshev > 4).all()
    # Without exclusion the nearest neighbours of smooth images are the 1-2 px shifts (docs/references.md, N5).
    smooth = torch.nn.functional.avg_pool2d(torch.randn(4, 3, 72, 72), 9, stride=1)
    plain = NonLocalSampler(num_patches=8)(smooth)
    assert (plain[:, 1:] - plain[:, :1]).abs().amax(-1).float().mean() <= 2.5


def test_too_small_inputs_are_rejected_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="too small"):
        NonLocalSampler(num_patches=8)(torch.randn(1, 3, 24, 40))
    with pytest.raises(ValueError, match="candidate centres"):
        NonLocalSampler(num_patches=300)(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="mode"):
        NonLocalSampler(num_patches=8, mode="nearest")


def test_gather_maps_centres_to_each_level_by_its_own_size() -> None:
    torch.manual_seed(5)
    image_size = (64, 48)
    centres = torch.tensor([[[8, 8], [63, 47], [31, 20]], [[10, 40], [50, 9], [32, 24]]])
    for level_size in [(64, 48), (63, 47), (31, 23), (15, 11)]:
        feature = torch.randn(2, 7, *level_size)
        gathered = gather_features(feature, centres, image_size)
        assert gathered.shape == (2, 3, 7)
        for b in range(2):
            for i, (y, x) in enumerate(centres[b].tolist()):
                ly, lx = y * level_size[0] // image_size[0], x * level_size[1] // image_size[1]
                assert torch.equal(gathered[b, i], feature[b, :, ly, lx])
