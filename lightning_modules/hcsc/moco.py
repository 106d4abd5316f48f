"""Old import path of MoCo v2, kept so that code and configs written before ``lightning_modules/moco/`` still work
(``_target_: lightning_modules.hcsc.moco.MoCoV2``); new code imports from ``lightning_modules.moco``."""

from lightning_modules.moco.losses import infonce_logits
from lightning_modules.moco.module import MoCoV2, ProjectedEncoder

__all__ = ["MoCoV2", "ProjectedEncoder", "infonce_logits"]
