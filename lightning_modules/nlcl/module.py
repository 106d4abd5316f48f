"""NLCL: unsupervised deraining where contrastive learning meets self-similarity (Ye et al., CVPR 2022).

One training iteration (official models/NLCL_model.py; docs/references.md, N2):
    B^ = G_B(O),  R^ = G_R(O)                                              decomposition, O = B + R
    D step:  L_D = 1/2 [ (D(B^) - 0)^2 + (D(B) - 1)^2 ]                   LSGAN, B an unpaired clean image
    G step:  L_G = l_gan (D(B^) - 1)^2                                     adversarial
                 + l_loc  L_LocContra(O -> B^, B -> G_B(B))               PatchNCE on G_B features
                 + l_layer L_LayerContra(B^ group, R^ group)              SupCon on D features, non-local groups
                 + l_cons ||B^ + R^ - O||^2  + l_sparse |O - B^|_1         consistency, sparsity
D is frozen in the G step: NLCL gradients flow *through* D into G_B, G_R and the heads, never into D.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lightning_modules.base import OptimizerFactory, trainable
from lightning_modules.components.restoration_eval import tiled_apply
from lightning_modules.components.weights import load_matching_weights
from lightning_modules.nlcl.losses import LayerContrastLoss, PatchNCELoss, lsgan_loss
from lightning_modules.nlcl.networks import LayerGenerator, PatchDiscriminator, ProjectionHeads
from lightning_modules.nlcl.sampler import NonLocalSampler, gather_features
from lightning_modules.restoration import RestorationModule


class NLCL(RestorationModule):
    """NLCL with code-faithful defaults (yunguo224/NLCL @ f4b44ac) and the paper-figure variants as switches.

    Args:
        generator_b, generator_r: G_B (background) and G_R (rain layer).
        discriminator: the antialiased PatchGAN D (also the encoder of L_LayerContra).
        lambda_*: loss weights (official 1, 1, 1, 1, 0.1).
        temperature: t of both contrastive losses (0.07).
        num_positives / num_negatives: sizes of the B^ and R^ non-local groups (8 / 128).
        num_locations: LocContra locations per image (256).
        loc_layers: G_B modules whose outputs feed L_LocContra (official 0, 2, 4, 8, 12).
        discriminator_taps: D conv indices feeding L_LayerContra besides the image (official 0, 3, 7).
        loc_identity: the identity branch B -> G_B(B) of L_LocContra (CUT ``nce_idt``, on officially).
        loc_sampling: ``similar`` (official: the 256 most similar locations are queries and negatives),
            ``random`` (plain CUT) or ``dissimilar`` (the figure's reverse non-local negatives).
        positive_sampling / negative_sampling: the same choice for the B^ and R^ groups.
        positive_exclusion_radius: drop B^ candidates within this Chebyshev radius of the anchor (0 = official).
        compat_frozen_heads: reproduce the release's optimiser bugs (docs/references.md, N9): LocContra and B^
            heads never update, the R^ heads take two Adam steps per iteration. Off by default (each head trained
            once).
        discriminator_lr_scale: D's learning rate over G's (1 = official; a two-time-scale update, Heusel et al.
            2017). x4 did not get D off chance sooner on nlcl_rain100l_cpu; the warm-up below did.
        discriminator_warmup_epochs: first epochs in which only D trains, against the untouched G_B (0 = official):
            D first learns what rain looks like, which short runs otherwise spend hundreds of iterations on.
        pretrained_b / pretrained_r: official ``latest_net_Back.pth`` / ``latest_net_Rain.pth`` to start from.
        inference_tile: restore images larger than this side tile by tile (None = always whole).
        save_test_outputs: write every derained test image into ``<run dir>/test_outputs`` (the
            ``test_outputs`` callback of ``conf/callbacks/default.yaml`` reads this switch and does the writing).
    """

    compile_targets = ("G_B", "G_R", "D")
    ddp_find_unused_parameters = True  # the D step and the G step each leave the other's parameters without gradients

    def __init__(
        self,
        generator_b: LayerGenerator,
        generator_r: LayerGenerator,
        discriminator: PatchDiscriminator,
        optimizer: OptimizerFactory | None = None,
        scheduler: dict[str, Any] | None = None,
        lambda_gan: float = 1.0,
        lambda_loc: float = 1.0,
        lambda_layer: float = 1.0,
        lambda_consistency: float = 1.0,
        lambda_sparsity: float = 0.1,
        temperature: float = 0.07,
        head_dim: int = 256,
        num_positives: int = 8,
        num_negatives: int = 128,
        num_locations: int = 256,
        patch_size: int = 16,
        search_size: int = 40,
        loc_layers: Sequence[int] = (0, 2, 4, 8, 12),
        discriminator_taps: Sequence[int] = (0, 3, 7),
        loc_identity: bool = True,
        loc_sampling: str = "similar",
        positive_sampling: str = "similar",
        negative_sampling: str = "similar",
        positive_exclusion_radius: int = 0,
        compat_frozen_heads: bool = False,
        discriminator_lr_scale: float = 1.0,
        discriminator_warmup_epochs: int = 0,
        pretrained_b: str | None = None,
        pretrained_r: str | None = None,
        inference_tile: int | None = 1024,
        inference_overlap: int = 64,
        save_test_outputs: bool = False,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__(optimizer, scheduler, channels_last, compile)
        self.save_hyperparameters(ignore=["generator_b", "generator_r", "discriminator", "optimizer"], logger=False)
        self.automatic_optimization = False
        self.G_B, self.G_R, self.D = generator_b, generator_r, discriminator
        if pretrained_b:
            load_official_generator(self.G_B, pretrained_b, "G_B", "model.pretrained_b")
        if pretrained_r:
            load_official_generator(self.G_R, pretrained_r, "G_R", "model.pretrained_r")

        self.loc_layers, self.discriminator_taps = sorted(loc_layers), sorted(discriminator_taps)
        self.loc_heads = ProjectionHeads(self.G_B.tap_channels(self.loc_layers), head_dim)
        d_channels = self.D.tap_channels(self.discriminator_taps)
        self.background_heads = ProjectionHeads(d_channels, head_dim)
        self.rain_heads = ProjectionHeads(d_channels, head_dim)

        self.loc_sampler = NonLocalSampler(num_locations, patch_size, search_size, loc_sampling)
        self.positive_sampler = NonLocalSampler(num_positives, patch_size, search_size, positive_sampling,
                                                positive_exclusion_radius)
        self.negative_sampler = NonLocalSampler(num_negatives, patch_size, search_size, negative_sampling)
        self.patch_nce = PatchNCELoss(temperature)
        self.layer_contrast = LayerContrastLoss(temperature)
        self.layer_contrast_floor = LayerContrastLoss.floor(num_positives, num_negatives)
        if compat_frozen_heads:
            # Release bug (docs/references.md, N9): these heads are never stepped (gradients still reach G).
            self.loc_heads.requires_grad_(False)
            self.background_heads.requires_grad_(False)

    # ---- optimisation --------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        compat = self.hparams.compat_frozen_heads
        heads = [] if compat else [self.loc_heads, self.background_heads, self.rain_heads]
        # One Adam over G_B, G_R and the heads equals the official per-network Adams (Adam is per parameter).
        optimizers = [self.optimizer_factory(trainable([self.G_B, self.G_R, *heads])),
                      self.optimizer_factory(trainable([self.D]))]
        for group in optimizers[1].param_groups:  # before the schedulers record their initial lr
            group["lr"] *= self.hparams.discriminator_lr_scale
        if compat:
            # Release bug (N9): two optimisers (two Adam states) both step the R^ heads every iteration.
            optimizers += [self.optimizer_factory(trainable([self.rain_heads])) for _ in range(2)]
        schedulers = [self.make_scheduler(opt, optimizer_steps_per_batch=len(optimizers)) for opt in optimizers]
        if schedulers[0] is None:
            return optimizers
        return optimizers, schedulers

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        rainy, clean = self.format_input(batch["rainy"]), self.format_input(batch["clean"])
        optimizers = self.optimizers()
        opt_g, opt_d, *opt_rain_heads = optimizers if isinstance(optimizers, list) else [optimizers]

        if self.current_epoch < self.hparams.discriminator_warmup_epochs:
            # D warm-up: D learns rainy-vs-clean against the untouched G_B before G takes any step.
            with torch.no_grad():
                background = self.G_B(rainy)
            loss_d = self.discriminator_step(opt_d, background, clean)
            self.step_schedulers()
            self.log("train/loss_d", loss_d, on_step=True, on_epoch=False, batch_size=rainy.shape[0])
            return

        background, identity, rain = self.decompose(rainy, clean)
        loss_d = self.discriminator_step(opt_d, background, clean)

        loss_g, parts = self.generator_loss(rainy, clean, background, identity, rain)
        for opt in [opt_g, *opt_rain_heads]:
            opt.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        for opt in [opt_g, *opt_rain_heads]:
            opt.step()
        self.step_schedulers()

        logs = {f"train/{k}": v.detach() for k, v in parts.items()}
        logs.update({"train/loss_g": loss_g.detach(), "train/loss_d": loss_d})
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=rainy.shape[0])
        self.log("train/loss", loss_g.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=rainy.shape[0])

    def discriminator_step(self, opt_d: Any, background: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        loss_d = self.discriminator_loss(background, clean)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()
        return loss_d.detach()

    def step_schedulers(self) -> None:
        """Every schedule spans all iterations, D warm-up included (there G's schedule steps before G does)."""
        schedulers = self.lr_schedulers()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler")  # (a regex)
            for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
                scheduler.step()

    def decompose(self, rainy: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """B^ = G_B(O), G_B(B) for the identity branch (empty without it), R^ = G_R(O)."""
        n = rainy.shape[0]
        transferred = self.G_B(torch.cat((rainy, clean)) if self.hparams.loc_identity else rainy)
        return transferred[:n], transferred[n:], self.G_R(rainy)

    def discriminator_loss(self, background: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """L_D: fake = B^ (detached), real = an unpaired clean image; one batched pass (IN is per sample)."""
        n = background.shape[0]
        logits = self.D(torch.cat((background.detach(), clean)))
        return 0.5 * (lsgan_loss(logits[:n], real=False) + lsgan_loss(logits[n:], real=True))

    def generator_loss(
        self, rainy: torch.Tensor, clean: torch.Tensor, background: torch.Tensor, identity: torch.Tensor,
        rain: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_G with D frozen: D's weights get no gradient, its features pass gradients to G and the heads."""
        self.D.requires_grad_(False)
        try:
            adv_logits, background_taps = self.D.forward_with_taps(background, self.discriminator_taps)
            _, rain_taps = self.D.forward_with_taps(rain, self.discriminator_taps, need_logits=False)
        finally:
            self.D.requires_grad_(True)  # the graph above was built without D's weights; restoring is safe
        layer_contra, positive_offset = self.layer_contrast_loss(background_taps, rain_taps)
        parts = {
            "adv": lsgan_loss(adv_logits, real=True),
            "layer_contra": layer_contra,
            "loc_contra": self.location_contrast_loss(rainy, background, clean, identity),
            "consistency": F.mse_loss(background.float() + rain.float(), rainy.float()),
            "sparsity": (rainy.float() - background.float()).abs().mean(),
        }
        hp = self.hparams
        loss = (hp.lambda_gan * parts["adv"] + hp.lambda_loc * parts["loc_contra"]
                + hp.lambda_layer * parts["layer_contra"] + hp.lambda_consistency * parts["consistency"]
                + hp.lambda_sparsity * parts["sparsity"])
        parts["layer_contra_excess"] = parts["layer_contra"].detach() - self.layer_contrast_floor
        parts["positive_offset"] = positive_offset  # mean Chebyshev distance of B^ positives to their anchor
        return loss, parts

    # ---- the two contrastive terms -------------------------------------------------------------------------
    def layer_contrast_loss(
        self, background_taps: list[torch.Tensor], rain_taps: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L_LayerContra: B^ and R^ groups found on the images themselves, compared at every D level.

        Also returns the mean Chebyshev offset of the positives from their anchor (a diagnostic,
        docs/references.md, N5).
        """
        size = tuple(background_taps[0].shape[-2:])
        positives = self.positive_sampler(background_taps[0])  # (B, 8, 2), anchor first
        negatives = self.negative_sampler(rain_taps[0])  # (B, 128, 2), an independent anchor
        offset = (positives[:, 1:] - positives[:, :1]).abs().amax(-1).float().mean()
        loss = background_taps[0].new_zeros((), dtype=torch.float32)
        for level, (fb, fr) in enumerate(zip(background_taps, rain_taps)):
            zb = self.background_heads(level, gather_features(fb, positives, size))
            zr = self.rain_heads(level, gather_features(fr, negatives, size))
            loss = loss + self.layer_contrast(zb, zr)
        return loss / len(background_taps), offset

    def location_contrast_loss(
        self, rainy: torch.Tensor, background: torch.Tensor, clean: torch.Tensor, identity: torch.Tensor
    ) -> torch.Tensor:
        """L_LocContra: PatchNCE between G_B features of the input (keys) and of its output (queries).

        Locations are found once on the input's head-conv features and shared by keys and queries; with the
        identity branch the two PatchNCE terms are averaged (equal batch halves).
        """
        if self.hparams.loc_identity:
            sources, outputs = torch.cat((rainy, clean)), torch.cat((background, identity))
        else:
            sources, outputs = rainy, background
        with torch.no_grad():
            keys = self.G_B.encode(sources, self.loc_layers)
        queries = self.G_B.encode(outputs, self.loc_layers)
        centres = self.loc_sampler(keys[0])
        size = tuple(sources.shape[-2:])
        loss = rainy.new_zeros((), dtype=torch.float32)
        for level, (fq, fk) in enumerate(zip(queries, keys)):
            q = self.loc_heads(level, gather_features(fq, centres, size))
            with torch.no_grad():
                k = self.loc_heads(level, gather_features(fk, centres, size))
            loss = loss + self.patch_nce(q, k)
        return loss / len(queries)

    # ---- inference -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def restore(self, rainy: torch.Tensor, with_rain: bool = True) -> dict[str, torch.Tensor]:
        """Decompose rainy images in [-1, 1] at full resolution: ``{"background": B^, "rain": R^}`` in [-1, 1]."""
        rainy = self.format_input(rainy)

        def decompose(x: torch.Tensor) -> torch.Tensor:
            parts = [self.G_B(x)] + ([self.G_R(x)] if with_rain else [])
            return torch.cat(parts, dim=1)

        tile = self.hparams.inference_tile
        if tile and max(rainy.shape[-2:]) > tile:
            out = tiled_apply(decompose, rainy, tile, self.hparams.inference_overlap)
        else:
            out = decompose(rainy).float()
        result = {"background": out[:, :3]}
        if with_rain:
            result["rain"] = out[:, 3:6]
        return result


def load_official_generator(generator: LayerGenerator, path: str | Path, name: str = "G_B",
                            key: str = "model.pretrained_b") -> None:
    """Load a released NLCL generator state dict (``latest_net_Back.pth``), or the ``name`` network (``G_B`` /
    ``G_R``) of a project checkpoint, strictly; a missing file names its config ``key``."""
    load_matching_weights(generator, path, key, prefixes=(f"{name}.",))
