"""MoCo v2: the module, its queue and momentum encoder, and the InfoNCE loss (the base of HCSC)."""
