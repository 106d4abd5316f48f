"""DCoDR: a contrastive objective for learning disentangled representations (Kahana & Hoshen, ECCV 2022).

    z = E(x), z+ = E(T(x))                                   anchor un-augmented, one random augmentation T
    L_con = domain-wise InfoNCE(z, z+; negatives = other anchors of the same domain)
    x^ = G(z / ||z||, e_d)                                   LORD-style AdaIN generator, per-domain embedding e_d
    L = L_con + l_rec (|x^ - x|_1 + sum_l |phi_l(x^) - phi_l(x)|_1)          (DCoDR; DCoDR-norec: L = L_con)

With ``negatives: all`` and no generator the same module is the standard contrastive baseline: one flag apart.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from lightning_modules.base import BaseModule, OptimizerFactory
from lightning_modules.components.distributed import gather, gather_with_grad
from lightning_modules.components.numerics import full_precision
from lightning_modules.dcodr.losses import DomainContrastiveLoss, ReconstructionLoss
from lightning_modules.dcodr.networks import ContentEncoder, DomainGenerator


class DCoDR(BaseModule):
    """Args:
        encoder: the content encoder E.
        generator: a partially instantiated ``DomainGenerator`` (built in ``setup`` once the data gives the number
            of domains and the image size); None = DCoDR-norec.
        reconstruction: the reconstruction loss (L1 + VGG16 perceptual, or its pixel fallback).
        reconstruction_weight: l_rec (0.3).
        temperature / num_negatives / negatives / num_positives: the contrastive loss (``negatives: all`` =
            standard contrastive; ``num_positives: 0`` = the official no-positive ablation).
        encoder_lr / generator_lr / embedding_lr: per-part Adam learning rates (1e-4 / 3e-4 / 3e-3).
        num_domains / image_size: override what the datamodule reports.
    """

    compile_targets = ("encoder", "generator")

    def __init__(
        self,
        encoder: ContentEncoder,
        generator: Callable[..., DomainGenerator] | None = None,
        reconstruction: ReconstructionLoss | None = None,
        reconstruction_weight: float = 0.3,
        temperature: float = 0.2,
        num_negatives: int | None = 64,
        negatives: str = "domain",
        num_positives: int = 1,
        encoder_lr: float = 1e-4,
        generator_lr: float = 3e-4,
        embedding_lr: float = 3e-3,
        num_domains: int | None = None,
        image_size: int | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: dict[str, Any] | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__(optimizer or functools.partial(torch.optim.Adam, betas=(0.5, 0.999)), scheduler,
                         channels_last, compile)
        if generator is not None and not callable(generator):
            raise TypeError("`model.generator` must be a partial DomainGenerator config (`_partial_: true`) or null, "
                            f"got {type(generator).__name__}")
        self.save_hyperparameters(ignore=["encoder", "generator", "reconstruction", "optimizer"], logger=False)
        self.encoder = encoder
        self.generator_factory = generator
        self.generator: DomainGenerator | None = None
        self.reconstruction = reconstruction if generator is not None else None
        if generator is not None and reconstruction is None:
            self.reconstruction = ReconstructionLoss(perceptual=False)
        self.contrastive = DomainContrastiveLoss(temperature, num_negatives, negatives, num_positives)
        if generator is not None and num_domains is not None and image_size is not None:
            self._build_generator(num_domains, image_size)

    def _build_generator(self, num_domains: int, image_size: int) -> None:
        assert self.generator_factory is not None
        self.generator = self.generator_factory(num_domains=num_domains, image_size=image_size,
                                                content_dim=self.encoder.content_dim)

    def setup(self, stage: str) -> None:
        if self.generator_factory is not None and self.generator is None:
            datamodule = self.trainer.datamodule
            num_domains = self.hparams.num_domains or getattr(datamodule, "num_domains", None)
            image_size = self.hparams.image_size or getattr(datamodule, "image_size", None)
            if not num_domains or not image_size:
                raise ValueError("DCoDR's generator needs the number of domains and the image size "
                                 "(`model.num_domains`, `model.image_size`, or a domain datamodule)")
            self._build_generator(num_domains, image_size)
        if self.reconstruction is not None and stage == "fit":
            self.print(f"[contrastlab] DCoDR reconstruction loss: {self.reconstruction.mode}")

    @property
    def can_translate(self) -> bool:
        return self.generator is not None

    def supports(self, capability: str) -> bool:
        """``translate`` needs the generator: DCoDR-norec and the contrastive baseline have none."""
        return super().supports(capability) and (capability != "translate" or self.can_translate)

    # ---- optimisation --------------------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        hp = self.hparams
        groups = [{"params": list(self.encoder.parameters()), "lr": hp.encoder_lr, "name": "encoder"}]
        if self.generator is not None:
            embedding = list(self.generator.domain_embedding.parameters())
            rest = [p for n, p in self.generator.named_parameters() if not n.startswith("domain_embedding")]
            groups += [{"params": rest, "lr": hp.generator_lr, "name": "generator"},
                       {"params": embedding, "lr": hp.embedding_lr, "name": "domain_embedding"}]
        return groups

    # ---- public surface ------------------------------------------------------------------------------------
    def content(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.format_input(images))

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The evaluated representation: the unit-norm content code."""
        return F.normalize(self.content(images).float(), dim=1)

    @torch.no_grad()
    def translate(self, content_images: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """Render the content of each image in each domain: (R, C, 3, H, W) for R images and C domain ids."""
        if self.generator is None:
            raise RuntimeError("this model has no generator (DCoDR-norec / contrastive): nothing to render")
        z = self.embed(content_images)
        rows, cols = z.shape[0], domains.shape[0]
        images = self.generator(z.repeat_interleave(cols, 0), domains.repeat(rows))
        return images.view(rows, cols, *images.shape[1:])

    # ---- training ------------------------------------------------------------------------------------------
    def global_batch(self, z: torch.Tensor, z_positive: torch.Tensor | None,
                     domains: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The codes of every rank's share of the global batch (the sampler deals one batch to the ranks), gathered
        with their gradients: each rank's loss is the loss of the whole batch, and DDP's averaging of the ranks'
        gradients gives that loss's gradient (the gather's backward sums the ranks' contributions)."""
        positives = gather_with_grad(z_positive) if z_positive is not None else None  # identities on one process
        return gather_with_grad(z), positives, gather(domains)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, positives, domains = batch["image"], batch["positive"], batch["domain"]
        z = self.content(images)
        # A separate forward: BN statistics per view, as the official code; none without positives.
        z_positive = self.content(positives) if self.hparams.num_positives else None
        loss_con = self.contrastive(*self.global_batch(z, z_positive, domains))
        logs = {"train/contrastive": loss_con.detach()}
        loss = loss_con
        if self.generator is not None:
            reconstruction = self.generator(F.normalize(z.float(), dim=1), domains)
            loss_rec = self.reconstruction(reconstruction, images)
            loss = loss + self.hparams.reconstruction_weight * loss_rec
            logs["train/reconstruction"] = loss_rec.detach()
        logs["train/loss"] = loss.detach()
        self.log_dict(logs, prog_bar=True, batch_size=images.shape[0])
        return loss

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Content codes of the held-out split; the probe callbacks collect them. Autocast off, as the training
        codes the probes are fitted on (embedded by the callbacks outside any autocast)."""
        with full_precision(self.device):
            codes = self.embed(batch["image"])
        return {"embedding": codes, "domain": batch["domain"], "factors": batch["factors"]}
