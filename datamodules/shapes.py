"""A procedural "shapes" data set with known factors (a 2-D Shapes3D-lite; docs/references.md, D6).

Domain = the object's shape (square, circle, triangle, capsule). Content = wall hue, floor hue, object hue (10
each), object scale (8) and orientation (15 angles in [-30, 30] degrees). The orientation tilts the wall/floor
boundary as well as the object, so it is visible for every shape (a circle's own rotation is not). Domain and
content are drawn independently, so the domain is unpredictable from the content by construction.
"""

from __future__ import annotations

import numpy as np

SHAPES = ("square", "circle", "triangle", "capsule")
FACTORS = {"wall_hue": 10, "floor_hue": 10, "object_hue": 10, "scale": 8, "orientation": 15}


def _hsv_to_rgb(hue: np.ndarray, saturation: float, value: float) -> np.ndarray:
    """Vectorised HSV -> RGB for an array of hues in [0, 1): (..., 3)."""
    h = (hue % 1.0) * 6.0
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = value * (1 - saturation), value * (1 - saturation * f), value * (1 - saturation * (1 - f))
    v = np.full_like(h, value)
    table = np.stack([np.stack(c, -1) for c in ((v, t, p * np.ones_like(h)), (q, v, p * np.ones_like(h)),
                                                 (p * np.ones_like(h), v, t), (p * np.ones_like(h), q, v),
                                                 (t, p * np.ones_like(h), v), (v, p * np.ones_like(h), q))])
    return np.take_along_axis(table, i[None, ..., None].repeat(3, -1), 0)[0]


def render_shapes(domains: np.ndarray, factors: dict[str, np.ndarray], size: int = 64) -> np.ndarray:
    """Images (N, size, size, 3) uint8 for the given shape ids and factor indices, all drawn at once."""
    n = len(domains)
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    yy, xx = yy[None], xx[None]
    angle = np.deg2rad(np.linspace(-30, 30, FACTORS["orientation"])[factors["orientation"]])[:, None, None]
    cos, sin = np.cos(angle), np.sin(angle)
    floor = (yy - 0.15) * cos - xx * sin > 0  # a tilted horizon
    radius = (0.18 + 0.32 * factors["scale"] / (FACTORS["scale"] - 1))[:, None, None]
    cx, cy = 0.0, 0.2
    u = (xx - cx) * cos + (yy - cy) * sin
    v = -(xx - cx) * sin + (yy - cy) * cos
    shape = domains[:, None, None]
    square = np.maximum(np.abs(u), np.abs(v)) < radius * 0.8
    circle = u**2 + v**2 < radius**2
    triangle = (v < radius * 0.6) & (np.abs(u) < (v + radius) * 0.6) & (v > -radius)
    capsule = np.maximum(np.abs(u) - radius * 0.6, 0) ** 2 + v**2 < (radius * 0.45) ** 2
    obj = np.select([shape == 0, shape == 1, shape == 2, shape == 3], [square, circle, triangle, capsule])
    wall = _hsv_to_rgb(factors["wall_hue"] / FACTORS["wall_hue"], 0.6, 0.9)[:, None, None]
    ground = _hsv_to_rgb(factors["floor_hue"] / FACTORS["floor_hue"], 0.7, 0.6)[:, None, None]
    thing = _hsv_to_rgb(factors["object_hue"] / FACTORS["object_hue"] + 0.05, 0.9, 1.0)[:, None, None]
    image = np.where(floor[..., None], ground, wall)
    image = np.where(obj[..., None], thing, image)
    assert image.shape == (n, size, size, 3)
    return (image * 255).round().astype(np.uint8)


def sample_shapes(
    per_domain: int, size: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``per_domain`` images of each shape with independently drawn factors: images, domains, factors."""
    rng = np.random.default_rng(seed)
    domains = np.repeat(np.arange(len(SHAPES)), per_domain)
    factors = {name: rng.integers(0, levels, size=len(domains)) for name, levels in FACTORS.items()}
    return render_shapes(domains, factors, size), domains, factors
