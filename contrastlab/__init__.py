"""contrastlab: Lightning + Hydra reproductions of NLCL, HCSC and DCoDR (run helpers live here)."""

__version__ = "0.1.0"
