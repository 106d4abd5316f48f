"""DCoDR: the domain-wise loss against a slow reference and log(K + 1), networks, reconstruction, the module."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.components.backbones import ConvBackbone
from lightning_modules.dcodr.losses import DomainContrastiveLoss, ReconstructionLoss
from lightning_modules.dcodr.module import DCoDR
from lightning_modules.dcodr.networks import ContentEncoder, DomainGenerator


def codes(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def loss_loop(anchors, positives, domains, t, same_domain=True) -> float:
    """Official ``SimCLR_Loss_w_Pos`` with every admissible negative:
    L_i = -s_ip/t + log(e^{s_ip/t} + sum_j e^{s_ij/t}); ``positives=None``: s_ip = 1 (``--num-pos 0``)."""
    a = F.normalize(anchors, dim=1)
    p = F.normalize(positives, dim=1) if positives is not None else None
    total = 0.0
    for i in range(len(a)):
        s_pos = (float(a[i] @ p[i]) if p is not None else 1.0) / t
        negatives = [float(a[i] @ a[j]) / t for j in range(len(a))
                     if j != i and (not same_domain or domains[j] == domains[i])]
        total += -s_pos + math.log(math.exp(s_pos) + sum(math.exp(v) for v in negatives))
    return total / len(a)


@pytest.mark.parametrize("negatives", ["domain", "all"])
def test_loss_matches_the_slow_reference(negatives: str) -> None:
    domains = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    anchors, positives = codes(10, 6, 0), codes(10, 6, 1)
    loss = DomainContrastiveLoss(0.2, num_negatives=64, negatives=negatives)(anchors, positives, domains)
    expected = loss_loop(anchors, positives, domains.tolist(), 0.2, same_domain=negatives == "domain")
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_zero_positives_is_the_uniformity_only_ablation() -> None:
    domains = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    anchors = codes(10, 6, 0).requires_grad_(True)
    loss = DomainContrastiveLoss(0.2, num_negatives=None, num_positives=0)(anchors, None, domains)
    assert loss.item() == pytest.approx(loss_loop(anchors.detach(), None, domains.tolist(), 0.2), rel=1e-9)
    loss.backward()
    assert anchors.grad is not None and anchors.grad.abs().sum() > 0  # the negatives still train
    with pytest.raises(ValueError, match="num_positives"):
        DomainContrastiveLoss(num_positives=2)


def test_equal_similarities_give_log_k_plus_one() -> None:
    domains = torch.arange(4).repeat_interleave(32)
    same = torch.ones(128, 8, dtype=torch.float64)
    loss = DomainContrastiveLoss(0.2, num_negatives=64)(same, same, domains)
    assert loss.item() == pytest.approx(math.log(32), rel=1e-9)  # K = 31 same-domain negatives
    capped = DomainContrastiveLoss(0.2, num_negatives=10)(same, same, domains)
    assert capped.item() == pytest.approx(math.log(11), rel=1e-9)
    everyone = DomainContrastiveLoss(0.2, num_negatives=None, negatives="all")(same, same, domains)
    assert everyone.item() == pytest.approx(math.log(128), rel=1e-9)


def test_the_switch_changes_only_the_negative_set() -> None:
    torch.manual_seed(0)
    domains = torch.arange(4).repeat_interleave(8)
    domain_wise = DomainContrastiveLoss(num_negatives=None).negative_mask(domains)
    standard = DomainContrastiveLoss(num_negatives=None, negatives="all").negative_mask(domains)
    same = domains[:, None] == domains[None, :]
    assert torch.equal(domain_wise, same & ~torch.eye(32, dtype=torch.bool))
    assert torch.equal(standard, ~torch.eye(32, dtype=torch.bool))
    # Capped negatives: exactly K per anchor, all admissible, a fresh random subset each call.
    capped = DomainContrastiveLoss(num_negatives=5)
    first, second = capped.negative_mask(domains), capped.negative_mask(domains)
    assert (first.sum(1) == 5).all() and not (first & ~same).any()
    assert not torch.equal(first, second)


def test_loss_gradient_check() -> None:
    domains = torch.tensor([0, 0, 1, 1, 1])
    anchors = codes(5, 3, 2).requires_grad_()
    positives = codes(5, 3, 3).requires_grad_()
    loss = DomainContrastiveLoss(0.5, num_negatives=None)
    assert torch.autograd.gradcheck(lambda a, p: loss(a, p, domains), (anchors, positives))


def test_generator_shapes_range_and_domain_embedding_init() -> None:
    torch.manual_seed(0)
    generator = DomainGenerator(num_domains=5, image_size=32, content_dim=16, domain_dim=8, channels=16)
    out = generator(F.normalize(torch.randn(3, 16), dim=1), torch.tensor([0, 4, 2]))
    assert out.shape == (3, 3, 32, 32) and out.min() >= 0 and out.max() <= 1
    assert generator.domain_embedding.weight.abs().max() <= 0.05
    assert generator.num_blocks == 3
    with pytest.raises(ValueError, match="power of two"):
        DomainGenerator(3, image_size=48)


def test_reconstruction_loss_fallback_and_vgg_taps(tmp_path) -> None:
    import torchvision

    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with pytest.warns(UserWarning, match="pixel L1 only"):
        pixel = ReconstructionLoss(perceptual=True, vgg_weights="IMAGENET1K_V1", allow_download=False)
    assert pixel.mode == "l1" and pixel(x, y).item() == pytest.approx((x - y).abs().mean().item())
    path = tmp_path / "vgg.pth"
    torch.save(torchvision.models.vgg16().state_dict(), path)
    perceptual = ReconstructionLoss(perceptual=True, vgg_weights=str(path))
    assert perceptual.mode == "l1+vgg16"
    taps = perceptual._features(x)
    assert [t.shape[1] for t in taps] == [64, 128, 256, 512, 512]  # relu1_2, relu2_2, relu3_2, relu4_3, pool5
    assert all((t >= 0).all() for t in taps)
    x.requires_grad_()
    perceptual(x, y).backward()
    assert x.grad is not None and all(p.grad is None for p in perceptual.parameters())


def tiny_dcodr(**kwargs) -> DCoDR:
    torch.manual_seed(0)
    encoder = ContentEncoder(ConvBackbone((8, 16)), content_dim=16, hidden_dim=None)
    generator = functools.partial(DomainGenerator, domain_dim=8, channels=16)
    options = dict(generator=generator, num_domains=4, image_size=16, temperature=0.2)
    options.update(kwargs)
    return DCoDR(encoder, **options)


def test_module_parameter_groups_translate_and_embedding_round_trip() -> None:
    model = tiny_dcodr()
    groups = {g["name"]: g["lr"] for g in model.parameter_groups()}
    assert groups == {"encoder": 1e-4, "generator": 3e-4, "domain_embedding": 3e-3}
    grid = model.eval().translate(torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 2, 3]))
    assert grid.shape == (3, 4, 3, 16, 16)
    with torch.no_grad():
        model.generator.domain_embedding.weight.mul_(7)
    restored = tiny_dcodr()
    restored.load_state_dict(model.state_dict())
    assert torch.equal(restored.generator.domain_embedding.weight, model.generator.domain_embedding.weight)
    norec = tiny_dcodr(generator=None)
    assert norec.generator is None and not norec.can_translate
    assert [g["name"] for g in norec.parameter_groups()] == ["encoder"]
    with pytest.raises(RuntimeError, match="no generator"):
        norec.translate(torch.rand(1, 3, 16, 16), torch.tensor([0]))


def test_moco_head_initialises_the_hidden_layer(tmp_path) -> None:
    backbone = ConvBackbone((8, 16))
    weight, bias = torch.randn(32, 16), torch.randn(32)
    path = tmp_path / "moco.pth"
    torch.save({"state_dict": {"module.encoder_q.fc.0.weight": weight, "module.encoder_q.fc.0.bias": bias}}, path)
    encoder = ContentEncoder(backbone, content_dim=8, hidden_dim=32, head_checkpoint=str(path))
    assert torch.equal(encoder.projection[0].weight, weight) and torch.equal(encoder.projection[0].bias, bias)
    with pytest.raises(KeyError, match="fc.0"):
        ContentEncoder(ConvBackbone((8, 16)), content_dim=8, hidden_dim=64, head_checkpoint=str(path))
