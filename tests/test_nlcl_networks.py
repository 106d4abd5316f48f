"""NLCL networks: official layout and size, D feature taps, heads, and the released checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lightning_modules.nlcl.networks import LayerGenerator, PatchDiscriminator, ProjectionHeads

SHARED = Path(os.environ.get("CONTRASTLAB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
OFFICIAL = SHARED / "nlcl_official"


def test_generator_matches_the_official_size_and_layout() -> None:
    generator = LayerGenerator()
    assert sum(p.numel() for p in generator.parameters()) == 316_195
    keys = set(generator.state_dict())
    assert {"gen.0.weight", "gen.1.model.0.conv.weight", "gen.16.model.1.conv.bias", "gen.17.conv.0.weight",
            "gen.17.conv.3.weight", "gen.18.weight"} <= keys
    assert len(keys) == 72


def test_generator_is_fully_convolutional_at_any_size() -> None:
    generator = LayerGenerator(width=8, num_blocks=2)
    assert generator(torch.randn(2, 3, 37, 53)).shape == (2, 3, 37, 53)


def test_residual_zero_init_generator_starts_at_the_identity() -> None:
    x = torch.randn(2, 3, 20, 24)
    assert torch.equal(LayerGenerator(width=8, num_blocks=2, residual_output=True, zero_init_output=True)(x), x)
    assert torch.count_nonzero(LayerGenerator(width=8, num_blocks=2, zero_init_output=True)(x)) == 0


def test_achromatic_residual_keeps_the_input_chroma() -> None:
    from lightning_modules.components.restoration_eval import rgb_to_cbcr

    torch.manual_seed(0)
    x = torch.rand(2, 3, 20, 24) * 0.5 + 0.25
    generator = LayerGenerator(width=8, num_blocks=2, residual_output=True, achromatic_residual=True)
    out = generator(x * 2 - 1)
    assert not torch.allclose(out, x * 2 - 1)  # it changes the image ...
    torch.testing.assert_close(rgb_to_cbcr((out + 1) / 2), rgb_to_cbcr(x), atol=1e-5, rtol=0)  # ... not its chroma
    with pytest.raises(ValueError, match="residual_output"):
        LayerGenerator(width=8, num_blocks=2, achromatic_residual=True)


def test_generator_encode_returns_the_requested_module_outputs() -> None:
    torch.manual_seed(0)
    generator = LayerGenerator(width=8, num_blocks=4)
    x = torch.randn(1, 3, 16, 16)
    feats = generator.encode(x, [0, 2, 4])
    expected, h = [], x
    for index, module in enumerate(generator.gen):
        h = module(h)
        if index in (0, 2, 4):
            expected.append(h)
    assert len(feats) == 3 and all(torch.equal(a, b) for a, b in zip(feats, expected))
    with pytest.raises(ValueError, match="outside"):
        generator.tap_channels([6])


def test_discriminator_layout_output_size_and_taps() -> None:
    torch.manual_seed(0)
    d = PatchDiscriminator(base_channels=8)
    x = torch.randn(1, 3, 256, 256)
    logits, taps = d.forward_with_taps(x, [0, 3, 7])
    assert logits.shape == (1, 1, 30, 30)  # CUT's PatchGAN: 30^2 patch map on 256^2
    assert [t.shape[1:] for t in taps] == [(3, 256, 256), (8, 255, 255), (16, 127, 127), (32, 63, 63)]
    assert torch.equal(taps[0], x)
    # conv0 is tapped after its LeakyReLU (official in-place activation), conv3/conv7 before their norms.
    assert torch.allclose(taps[1], F.leaky_relu(d.model[0](x), 0.2))
    assert (taps[1] < 0).any() and (taps[1] >= -0.2 * taps[1].abs().max()).all()
    h = d.model[2](d.model[1](d.model[0](x)))
    assert torch.allclose(taps[2], d.model[3](h))
    assert d.tap_channels([0, 3, 7]) == [3, 8, 16, 32]
    _, only = d.forward_with_taps(x, [0, 3, 7], need_logits=False)
    assert all(torch.equal(a, b) for a, b in zip(only, taps))
    with pytest.raises(ValueError, match="Conv2d"):
        d.tap_channels([1])


def test_projection_heads_normalise_as_the_official_code() -> None:
    torch.manual_seed(0)
    heads = ProjectionHeads([3, 5], dim=16)
    x = torch.randn(2, 7, 5)
    v = heads(1, x)
    raw = heads.mlps[1](x)
    assert v.shape == (2, 7, 16) and v.dtype == torch.float32
    # v / (||v|| + 1e-7): freshly initialised heads (xavier, gain 0.02) output tiny vectors, so the eps shows.
    assert torch.allclose(v, raw / (raw.norm(dim=-1, keepdim=True) + 1e-7))
    assert (v.norm(dim=-1) <= 1).all() and (v.norm(dim=-1) > 0.99).all()


@pytest.mark.skipif(not OFFICIAL.is_dir(), reason=f"official NLCL release not found at {OFFICIAL}")
def test_released_checkpoint_reproduces_the_official_outputs_through_eval_predict(make_cfg, tmp_path) -> None:
    """The prediction command with the released G_B reproduces pred_B/Eg{1,3}.png at >= 45 dB."""
    from eval import evaluate

    cfg = make_cfg(
        "experiment=nlcl_official", "mode=predict", f"data.predict_dir={OFFICIAL / 'O'}",
        f"model.pretrained_b={OFFICIAL / 'checkpoint' / 'latest_net_Back.pth'}",
        f"model.pretrained_r={OFFICIAL / 'checkpoint' / 'latest_net_Rain.pth'}", "trainer.accelerator=cpu",
        config_name="eval", output_dir=tmp_path / "predict",
    )
    metrics = evaluate(cfg)
    assert metrics["predict/images"] == 2
    for name in ("Eg1.png", "Eg3.png"):
        ours = np.asarray(Image.open(tmp_path / "predict" / "predictions" / name), dtype=np.float64)
        official = np.asarray(Image.open(OFFICIAL / "pred_B" / name).convert("RGB"), dtype=np.float64)
        psnr = 10 * np.log10(255.0**2 / np.mean((ours - official) ** 2))
        assert psnr >= 45.0, f"{name}: {psnr:.2f} dB"
