"""Every loss is fp32 under autocast: inside ``torch.autocast("cpu", bfloat16)`` (what Lightning's bf16-mixed
wraps the step in) a loss equals its value without autocast, to fp32 rounding, and so does its gradient.

Casting the operands to fp32 is not enough: autocast recasts matmul / mm / bmm to bf16 whatever their input
dtype, which moved the matmul-based losses by 8e-6 to 1.3e-2 on these inputs before their logits were formed with
autocast off."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.dcodr.losses import DomainContrastiveLoss
from lightning_modules.hcsc.losses import SelectiveInstanceLoss, SelectivePrototypeLoss
from lightning_modules.hcsc.selection import instance_keep_probability, prototype_logits, queue_log_normaliser
from lightning_modules.moco.losses import InfoNCELoss
from lightning_modules.nlcl.losses import LayerContrastLoss, PatchNCELoss, SupConLoss, lsgan_loss


def unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def hcsc_case() -> tuple[Callable[..., torch.Tensor], list[torch.Tensor]]:
    centroids = unit(6, 32, seed=3) * 0.9
    phi = torch.rand(6, generator=torch.Generator().manual_seed(4)) * 0.2 + 0.1
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3])
    queue = unit(64, 32, seed=5)

    def loss(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        keep_i = instance_keep_probability(queue, centroids, phi, labels, queue_log_normaliser(queue, centroids, phi))
        masks = [(keep_i > 0.5).float()]
        instance = SelectiveInstanceLoss(0.2)(q, k, queue, masks)
        usable = torch.tensor([False, False, False, False, True, True])
        proto = SelectivePrototypeLoss()(q, [labels], [centroids], [phi], [usable], [None])
        return instance + proto + prototype_logits(q, centroids, phi, labels, usable)[:, :5].sum() * 1e-3

    return loss, [unit(8, 32, seed=1), unit(8, 32, seed=2)]


CASES: dict[str, Callable[[], tuple[Callable[..., torch.Tensor], list[torch.Tensor]]]] = {
    "moco_infonce": lambda: (lambda q, k: InfoNCELoss(0.2)(q, k, unit(256, 128, seed=3))[0],
                             [unit(16, 128, seed=1), unit(16, 128, seed=2)]),
    "hcsc_selective": hcsc_case,
    "dcodr_domain_infonce": lambda: (lambda a, p: DomainContrastiveLoss(0.1, None)(a, p, torch.arange(24) % 3),
                                     [torch.randn(24, 64), torch.randn(24, 64)]),
    "nlcl_supcon": lambda: (lambda z: SupConLoss(0.07)(z, torch.arange(12) % 2), [unit(2, 12, 64, seed=1)]),
    "nlcl_layer_contra": lambda: (lambda b, r: LayerContrastLoss(0.07)(b, r),
                                  [unit(2, 8, 256, seed=1), unit(2, 32, 256, seed=2)]),
    "nlcl_patch_nce": lambda: (lambda q, k: PatchNCELoss(0.07)(q, k), [unit(2, 64, 256, seed=1),
                                                                        unit(2, 64, 256, seed=2)]),
    "nlcl_lsgan": lambda: (lambda d: lsgan_loss(d, True) + lsgan_loss(d, False), [torch.randn(32, 1, 8, 8)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_under_bf16_autocast_equals_fp32(name: str) -> None:
    torch.manual_seed(0)
    loss_fn, inputs = CASES[name]()

    def value_and_grads(autocast: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        leaves = [x.clone().requires_grad_(True) for x in inputs]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(*leaves)
        loss.backward()
        return loss.detach(), [leaf.grad for leaf in leaves]

    reference, reference_grads = value_and_grads(False)
    value, grads = value_and_grads(True)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, reference, rtol=1e-6, atol=1e-6)
    for grad, expected in zip(grads, reference_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)
