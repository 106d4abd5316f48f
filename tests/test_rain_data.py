"""Rainy/clean data: readers, splits, the rain synthesiser, loaders, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.images import ImageReadError, list_images, load_rgb
from datamodules.rain import (
    FolderSplits,
    FullImageDataset,
    PairedFolderSplit,
    RainDataModule,
    SyntheticRainSplits,
    UnpairedCropDataset,
)
from datamodules.rain_synthesis import RainSynthesizer
from datamodules.sampling import ShardSampler
from datamodules.verify import check_images


def write(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


# ---- bad input -------------------------------------------------------------------------------------------
def test_missing_folder_names_the_path_and_config_key(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere.*data\.splits\.rainy_dir"):
        FolderSplits(rainy_dir=str(tmp_path / "nowhere"), clean_dir=str(tmp_path)).load(0)


def test_empty_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"empty.*holds no images"):
        list_images(tmp_path / "empty", key="data.splits.clean_dir")


def test_corrupt_image_is_reported_by_name_before_training(tmp_path: Path, paired_rain_dir: Path) -> None:
    bad = tmp_path / "rainy" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ImageReadError, match="broken.png"):
        load_rgb(bad)
    with pytest.raises(ImageReadError, match="broken.png"):
        check_images([bad], "error")
    dm = RainDataModule(FolderSplits(rainy_dir=str(bad.parent), clean_dir=str(paired_rain_dir / "target")),
                        crop_size=32)
    with pytest.raises(ImageReadError, match="broken.png"):
        dm.setup("fit")


def test_truncated_image_is_reported_by_name(tmp_path: Path) -> None:
    good = write(tmp_path / "full.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageReadError, match="cut.png"):
        load_rgb(cut)


def test_unpaired_names_in_paired_mode_are_listed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("1", "2", "3"):
        write(tmp_path / "pairs" / "input" / f"{name}.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    for name in ("1", "2", "4"):
        write(tmp_path / "pairs" / "target" / f"{name}.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"do not match.*input.*: 3.*target.*: 4"):
        PairedFolderSplit(str(tmp_path / "pairs"), n_test=1).load(0)


def test_size_mismatch_of_a_pair_names_both_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write(tmp_path / "input" / "7.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    write(tmp_path / "target" / "7.png", rng.integers(0, 255, (40, 44, 3), dtype=np.uint8))
    splits = FolderSplits(rainy_dir=str(tmp_path / "input"), clean_dir=str(tmp_path / "target"),
                          test_dir=str(tmp_path)).load(0)
    with pytest.raises(ValueError, match=r"7.png.*7.png"):
        FullImageDataset(splits.test)[0]


def test_grayscale_rgba_palette_and_16bit_images_become_rgb(tmp_path: Path) -> None:
    gray = write(tmp_path / "gray.png", np.full((8, 8), 200, dtype=np.uint8), mode="L")
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 255
    rgba[0, 0, 3] = 0  # one transparent pixel
    rgba_path = write(tmp_path / "rgba.png", rgba, mode="RGBA")
    palette = Image.fromarray(np.full((8, 8, 3), 30, dtype=np.uint8)).convert("P")
    palette.save(tmp_path / "palette.png")
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(deep)
    for path in (gray, rgba_path, tmp_path / "palette.png", deep):
        image = load_rgb(path)
        assert image.mode == "RGB" and image.size == (8, 8)
    assert np.asarray(load_rgb(gray))[0, 0].tolist() == [200, 200, 200]
    assert np.asarray(load_rgb(rgba_path))[1, 1].tolist() == [255, 0, 0]
    assert np.asarray(load_rgb(rgba_path))[0, 0].tolist() == [0, 0, 0]  # transparent -> black
    assert np.asarray(load_rgb(deep))[0, 0].tolist() == [255, 255, 255]  # 16-bit white stays white


def test_real_rain_folder_with_grayscale_photos_loads(shared_like_root: Path) -> None:
    splits = FolderSplits(
        rainy_dir=str(shared_like_root / "real_rain" / "rainy"), rainy_ids="1-80",
        clean_dir=str(shared_like_root / "rain100l" / "target"), clean_ids="1-40",
        test_dir=str(shared_like_root / "rain100l"), test_ids="41-80",
        test_rainy_dir=str(shared_like_root / "real_rain" / "rainy"), test_rainy_ids="81-100",
    ).load(0)
    assert len(splits.train_rainy) == 80 and len(splits.train_clean) == 40
    assert sum(c is not None for _, c in splits.test) == 40 and sum(c is None for _, c in splits.test) == 20
    assert {p.name for p in [i.path for i in splits.train_rainy]} == {f"{n}.png" for n in range(1, 81)}
    sample = FullImageDataset([(splits.train_rainy[16], None)])[0]  # 17.png is grayscale on disk
    assert sample["rainy"].shape[0] == 3


def test_cyclegan_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for sub in ("trainA", "trainB", "testA"):
        for n in range(3):
            write(tmp_path / sub / f"{sub}_{n}.jpg", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    splits = FolderSplits(cyclegan_root=str(tmp_path)).load(0)
    assert len(splits.train_rainy) == 3 and len(splits.train_clean) == 3 and len(splits.test) == 3
    assert all(clean is None for _, clean in splits.test)


# ---- splits ----------------------------------------------------------------------------------------------
def test_paired_split_is_disjoint_seeded_and_never_leaks_test_scenes(paired_rain_dir: Path) -> None:
    split = PairedFolderSplit(str(paired_rain_dir), n_rainy=3, n_clean=3, n_test=4)
    a, b, c = split.load(0), split.load(0), split.build(1)
    stems = lambda items: {i.path.stem for i in items}  # noqa: E731
    rainy, clean = stems(a.train_rainy), stems(a.train_clean)
    test = {r.path.stem for r, _ in a.test}
    assert len(rainy) == 3 and len(clean) == 3 and len(test) == 4
    assert not (rainy & clean) and not (rainy & test) and not (clean & test)
    assert all(i.path.parent.name == "input" for i in a.train_rainy)
    assert all(i.path.parent.name == "target" for i in a.train_clean)
    assert stems(b.train_rainy) == rainy and {r.path.stem for r, _ in b.test} == test
    assert {r.path.stem for r, _ in c.test} != test
    with pytest.raises(ValueError, match="cannot split"):
        PairedFolderSplit(str(paired_rain_dir), n_rainy=5, n_clean=5, n_test=4).load(0)


def test_synthetic_splits_are_deterministic_and_disjoint() -> None:
    kwargs = dict(rainy_scenes=["astronaut"], clean_scenes=["coffee"], test_scenes=["chelsea"], variants=2,
                  max_side=64)
    a, b = SyntheticRainSplits(**kwargs).build(3), SyntheticRainSplits(**kwargs).build(3)
    assert len(a.train_rainy) == 2 and len(a.train_clean) == 1 and len(a.test) == 1
    assert torch.equal(a.train_rainy[0].tensor, b.train_rainy[0].tensor)
    assert not torch.equal(a.train_rainy[0].tensor, a.train_rainy[1].tensor)
    rainy, clean = a.test[0][0].tensor, a.test[0][1].tensor
    assert max(rainy.shape[1:]) == 64 and (rainy >= clean - 1e-6).all()  # additive rain only brightens
    with pytest.raises(ValueError, match="disjoint"):
        SyntheticRainSplits(test_scenes=["chelsea"], rainy_scenes=["coffee"], clean_scenes=["coffee"])
    with pytest.raises(ValueError, match="disjoint"):
        SyntheticRainSplits(test_scenes=["chelsea"], halved_scenes=["chelsea"])
    with pytest.raises(FileNotFoundError, match="available"):
        SyntheticRainSplits(test_scenes=["chelsea"], halved_scenes=["no_such_photo"]).load(0)


def test_halved_scenes_give_disjoint_halves_to_the_two_sets() -> None:
    splits = SyntheticRainSplits(test_scenes=["coins"], halved_scenes=["astronaut", "rocket"], variants=1,
                                 max_side=64).load(0)
    assert [i.name for i in splits.train_rainy] == ["astronaut_left_rain0.png", "rocket_right_rain0.png"]
    assert [i.name for i in splits.train_clean] == ["astronaut_right.png", "rocket_left.png"]
    from datamodules.rain import skimage_photo

    full = torch.nn.functional.interpolate(skimage_photo("astronaut")[None], size=(64, 64), mode="bilinear",
                                           antialias=True, align_corners=False)[0].clamp(0, 1)
    assert torch.allclose(splits.train_clean[0].tensor, full[:, :, 32:], atol=1e-6)
    assert splits.train_rainy[0].tensor.shape == (3, 64, 32)


def test_rain_synthesizer_is_additive_oriented_and_seeded() -> None:
    synth = RainSynthesizer(density=0.01, angle=0.0, angle_jitter=0.0, length=(20, 20), width=1.0)
    clean = torch.full((3, 96, 96), 0.2)
    rainy, rain = synth(clean, torch.Generator().manual_seed(0))
    again, _ = synth(clean, torch.Generator().manual_seed(0))
    assert torch.equal(rainy, again)
    assert torch.allclose(rainy, (clean + rain).clamp(0, 1)) and (rain >= 0).all() and rain.max() > 0.2
    # Vertical streaks: rain correlates far more along columns than along rows.
    r = rain[0] - rain[0].mean()
    vertical = (r[:-4] * r[4:]).mean()
    horizontal = (r[:, :-4] * r[:, 4:]).mean()
    assert vertical > 5 * horizontal.abs()
    with pytest.raises(ValueError, match="density"):
        RainSynthesizer(density=0.0)
    with pytest.raises(ValueError, match="intensity"):
        RainSynthesizer(intensity=(0.8, 0.2))


# ---- loaders ---------------------------------------------------------------------------------------------
def test_unpaired_crops_are_in_range_and_pair_afresh(paired_rain_dir: Path) -> None:
    splits = PairedFolderSplit(str(paired_rain_dir), n_rainy=3, n_clean=3, n_test=4).load(0)
    dataset = UnpairedCropDataset(splits.train_rainy, splits.train_clean, crop_size=32, length=12)
    torch.manual_seed(0)
    first = [dataset[0]["clean"] for _ in range(6)]
    sample = dataset[5]
    assert sample["rainy"].shape == (3, 32, 32) and sample["clean"].shape == (3, 32, 32)
    assert sample["rainy"].min() >= -1 and sample["rainy"].max() <= 1
    assert len({float(x.sum()) for x in first}) > 1  # new clean partner / crop every draw


def test_small_images_are_upscaled_to_the_crop(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write(tmp_path / "a" / "1.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    write(tmp_path / "b" / "1.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    splits = FolderSplits(rainy_dir=str(tmp_path / "a"), clean_dir=str(tmp_path / "b")).load(0)
    assert UnpairedCropDataset(splits.train_rainy, splits.train_clean, 32, 2)[0]["rainy"].shape == (3, 32, 32)


def test_datamodule_loaders(paired_rain_dir: Path) -> None:
    dm = RainDataModule(PairedFolderSplit(str(paired_rain_dir), n_rainy=3, n_clean=3, n_test=4), crop_size=32,
                        batch_size=2, num_workers=0, samples_per_epoch=8, val_images=2, val_crop=32)
    assert dm.has_test_data()
    batch = next(iter(dm.train_dataloader()))
    assert batch["rainy"].shape == (2, 3, 32, 32)
    val = next(iter(dm.val_dataloader()))
    assert val["rainy"].shape == (1, 3, 32, 32) and "target" in val and len(dm.val_dataloader()) == 2
    test = list(dm.test_dataloader())
    assert len(test) == 4 and test[0]["rainy"].shape == (1, 3, 40, 48) and test[0]["name"][0].endswith(".png")
    with pytest.raises(ValueError, match="crop_size"):
        RainDataModule(PairedFolderSplit(str(paired_rain_dir)), crop_size=16)
    with pytest.raises(ValueError, match="predict_dir"):
        dm.predict_dataloader()


def test_shard_sampler_covers_every_index_once() -> None:
    data = list(range(11))
    shards = [list(ShardSampler(data, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == data
    assert [len(ShardSampler(data, r, 3)) for r in range(3)] == [4, 4, 3]
    with pytest.raises(ValueError, match="outside"):
        ShardSampler(data, 3, 3)
