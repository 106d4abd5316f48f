"""The NLCL training step: where gradients go, what each optimiser changes, compatibility mode."""

from __future__ import annotations

import copy
import functools
import warnings

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from lightning_modules.nlcl.module import NLCL
from lightning_modules.nlcl.networks import LayerGenerator, PatchDiscriminator


def tiny_nlcl(**kwargs) -> NLCL:
    torch.manual_seed(0)
    options = dict(num_positives=4, num_negatives=16, num_locations=32, head_dim=16, loc_layers=[0, 2, 4])
    options.update(kwargs)
    return NLCL(
        LayerGenerator(width=8, num_blocks=4), LayerGenerator(width=8, num_blocks=4),
        PatchDiscriminator(base_channels=8), optimizer=functools.partial(torch.optim.Adam, lr=1e-3), **options,
    )


def batch(n: int = 2, size: int = 40) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"rainy": torch.rand(n, 3, size, size, generator=g) * 2 - 1,
            "clean": torch.rand(n, 3, size, size, generator=g) * 2 - 1}


def grads(module: torch.nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


def has_signal(module: torch.nn.Module) -> bool:
    return all(g is not None for g in grads(module)) and sum(float(g.abs().sum()) for g in grads(module)) > 0


def test_d_step_updates_only_d() -> None:
    model, data = tiny_nlcl(), batch()
    background, _, _ = model.decompose(data["rainy"], data["clean"])
    model.discriminator_loss(background, data["clean"]).backward()
    assert has_signal(model.D)
    assert all(g is None for g in grads(model.G_B) + grads(model.G_R))


def test_g_step_reaches_generators_and_heads_but_not_d() -> None:
    model, data = tiny_nlcl(), batch()
    background, identity, rain = model.decompose(data["rainy"], data["clean"])
    loss, parts = model.generator_loss(data["rainy"], data["clean"], background, identity, rain)
    loss.backward()
    for part in (model.G_B, model.G_R, model.loc_heads, model.background_heads, model.rain_heads):
        assert has_signal(part)
    assert all(g is None for g in grads(model.D))
    assert all(p.requires_grad for p in model.D.parameters())  # unfrozen again for the next D step
    assert set(parts) >= {"adv", "loc_contra", "layer_contra", "consistency", "sparsity", "layer_contra_excess"}


def test_each_contrastive_term_reaches_what_the_paper_says() -> None:
    model, data = tiny_nlcl(), batch()
    background, identity, rain = model.decompose(data["rainy"], data["clean"])
    model.location_contrast_loss(data["rainy"], background, data["clean"], identity).backward()
    assert has_signal(model.G_B) and has_signal(model.loc_heads)
    assert all(g is None for g in grads(model.G_R) + grads(model.background_heads) + grads(model.D))
    model.zero_grad(set_to_none=True)
    background, identity, rain = model.decompose(data["rainy"], data["clean"])
    model.D.requires_grad_(False)
    _, bt = model.D.forward_with_taps(background, model.discriminator_taps)
    _, rt = model.D.forward_with_taps(rain, model.discriminator_taps, need_logits=False)
    loss, offset = model.layer_contrast_loss(bt, rt)
    loss.backward()
    assert has_signal(model.G_B) and has_signal(model.G_R)
    assert has_signal(model.background_heads) and has_signal(model.rain_heads)
    assert all(g is None for g in grads(model.loc_heads) + grads(model.D))
    assert 0 <= float(offset) <= 20


class _Loader(pl.LightningDataModule):
    def __init__(self, steps: int = 1) -> None:
        super().__init__()
        self.steps = steps

    def train_dataloader(self) -> DataLoader:
        data = batch(2 * self.steps)
        items = [{"rainy": data["rainy"][i], "clean": data["clean"][i]} for i in range(2 * self.steps)]
        return DataLoader(items, batch_size=2)


def fit(model: NLCL, steps: int = 1) -> pl.Trainer:
    trainer = pl.Trainer(max_steps=-1, max_epochs=1, limit_train_batches=steps, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=_Loader(steps))
    return trainer


def changed(before: torch.nn.Module, after: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))


def test_training_step_updates_every_part_once() -> None:
    model = tiny_nlcl()
    before = copy.deepcopy(model)
    trainer = fit(model)
    for name in ("G_B", "G_R", "D", "loc_heads", "background_heads", "rain_heads"):
        assert changed(getattr(before, name), getattr(model, name)), name
    optimizers = trainer.optimizers
    assert len(optimizers) == 2 and trainer.global_step == 2  # one D and one G optimiser step per iteration
    states = [s["step"] for opt in optimizers for s in opt.state.values()]
    assert states and all(float(s) == 1 for s in states)


def test_discriminator_warmup_trains_only_d() -> None:
    model = tiny_nlcl(discriminator_warmup_epochs=1, scheduler={"name": "constant_then_linear", "decay_fraction": 0.5})
    before = copy.deepcopy(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = fit(model, steps=2)
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]  # G's schedule steps by design
    assert changed(before.D, model.D)
    for name in ("G_B", "G_R", "loc_heads", "background_heads", "rain_heads"):
        assert not changed(getattr(before, name), getattr(model, name)), name
    assert trainer.global_step == 2  # one D step per iteration, no G step


def test_compat_mode_reproduces_the_release_optimiser_bugs() -> None:
    model = tiny_nlcl(compat_frozen_heads=True)
    before = copy.deepcopy(model)
    trainer = fit(model)
    assert not changed(before.loc_heads, model.loc_heads)
    assert not changed(before.background_heads, model.background_heads)
    assert changed(before.rain_heads, model.rain_heads)
    opt_g, opt_d, rain_a, rain_b = trainer.optimizers
    rain_params = set(model.rain_heads.parameters())
    assert rain_params == set(rain_a.param_groups[0]["params"]) == set(rain_b.param_groups[0]["params"])
    assert not rain_params & set(opt_g.param_groups[0]["params"])
    # Two independent Adam states each took one step on the same parameters.
    assert all(float(rain_a.state[p]["step"]) == 1 and float(rain_b.state[p]["step"]) == 1 for p in rain_params)


def test_restore_tiles_large_images_and_keeps_size() -> None:
    model = tiny_nlcl(inference_tile=48, inference_overlap=16).eval()
    x = torch.rand(1, 3, 70, 90) * 2 - 1
    out = model.restore(x)
    assert out["background"].shape == x.shape and out["rain"].shape == x.shape
    whole = tiny_nlcl(inference_tile=None).eval()
    whole.load_state_dict(model.state_dict())
    assert torch.allclose(whole.restore(x)["background"], model.G_B(x), atol=1e-5)


def test_schedule_is_constant_then_linear_over_iterations() -> None:
    model = tiny_nlcl(scheduler={"name": "constant_then_linear", "decay_fraction": 0.5, "final_factor": 0.1})
    trainer = fit(model, steps=4)
    lrs = [opt.param_groups[0]["lr"] for opt in trainer.optimizers]
    # 4 iterations, the last 2 decay: factors 1, 1, 0.55, 0.1 -> after 4 scheduler steps the rate is 0.1 x.
    assert lrs == pytest.approx([1e-4, 1e-4])


def test_discriminator_lr_scale_keeps_its_ratio_through_the_schedule() -> None:
    model = tiny_nlcl(discriminator_lr_scale=4.0,
                      scheduler={"name": "constant_then_linear", "decay_fraction": 0.5, "final_factor": 0.1})
    trainer = fit(model, steps=4)
    generator_opt, discriminator_opt = trainer.optimizers
    assert discriminator_opt.param_groups[0]["lr"] == pytest.approx(4e-4)  # 4 x (1e-3 decayed to 0.1 x)
    assert generator_opt.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_compile_keeps_parameter_names_for_checkpoints() -> None:
    model = tiny_nlcl(compile=True)
    keys = list(model.state_dict())
    model.on_fit_start()  # compiles G_B, G_R and D in place (lazily: nothing runs until the first forward)
    assert list(model.state_dict()) == keys
    assert model.G_B._compiled_call_impl is not None


def test_official_linear_decay_steps_once_an_epoch() -> None:
    """CUT / NLCL's lambda rule, stepped per epoch: 1 - max(0, epoch + 1 - 200) / 11 over 210 epochs."""
    from lightning_modules.components.schedules import build_scheduler

    steps_per_epoch = 3
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, "constant_then_linear", 210 * steps_per_epoch, steps_per_epoch,
                                decay_epochs=10, final_factor=1 / 11, per_epoch=True)
    factors = [scheduler.lr_lambdas[0](step) for step in range(210 * steps_per_epoch)]
    official = [1.0 - max(0, epoch + 1 - 200) / 11 for epoch in range(210) for _ in range(steps_per_epoch)]
    assert factors == pytest.approx(official)
    decay = factors[200 * steps_per_epoch:]
    assert factors[200 * steps_per_epoch] == pytest.approx(10 / 11) and sum(decay) / len(decay) == pytest.approx(0.5)
