"""Perlin gradient noise and the thresholded Perlin masks DRAEM and DSR draw anomalies into.

Noise is a continuous function of the pixel coordinates, so a rotated noise image is obtained by
evaluating it at rotated coordinates (no resampling, no empty corners). Each call is fully
vectorised over the pixels; the only Python loop is over the images of a batch.

DRAEM's recipe: the lattice frequency along each axis is ``2**k`` with ``k`` drawn independently per
axis from ``[min_scale, max_scale)`` (0..5 in the paper), the noise is rotated by an angle in
``[-90, 90]`` degrees and thresholded at 0.5.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["perlin_noise", "perlin_mask", "perlin_masks", "random_perlin_noise"]


def _fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic smoothstep 6t^5 - 15t^4 + 10t^3 (zero first and second derivative at 0, 1)."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise(
    shape: tuple[int, int],
    res: tuple[float, float],
    rng: np.random.Generator,
    angle: float = 0.0,
) -> np.ndarray:
    """Gradient noise on an ``(H, W)`` grid with ``res = (ry, rx)`` lattice periods per axis.

    Values lie in [-1, 1] (the classic 2-D range of ±sqrt(1/2) scaled by sqrt(2)); the mean is about 0.
    ``angle`` (degrees) rotates the pattern about the image centre.
    """
    height, width = int(shape[0]), int(shape[1])
    ys = (np.arange(height, dtype=np.float64) + 0.5) / height - 0.5
    xs = (np.arange(width, dtype=np.float64) + 0.5) / width - 0.5
    y, x = np.meshgrid(ys * res[0], xs * res[1], indexing="ij")
    if angle:
        theta = math.radians(angle)
        # Rotate in an isotropic frame, then return to lattice units per axis.
        cy, cx = y / res[0] * height, x / res[1] * width
        ry = math.cos(theta) * cy - math.sin(theta) * cx
        rx = math.sin(theta) * cy + math.cos(theta) * cx
        y, x = ry / height * res[0], rx / width * res[1]
    y0, x0 = np.floor(y), np.floor(x)
    oy, ox = int(y0.min()), int(x0.min())
    iy, ix = (y0 - oy).astype(np.intp), (x0 - ox).astype(np.intp)
    fy, fx = y - y0, x - x0
    # Unit gradients on the lattice corners covering every (possibly rotated) coordinate.
    phi = rng.uniform(0.0, 2.0 * math.pi, size=(int(iy.max()) + 2, int(ix.max()) + 2))
    gy, gx = np.sin(phi), np.cos(phi)

    def corner(dy: int, dx: int) -> np.ndarray:
        return gy[iy + dy, ix + dx] * (fy - dy) + gx[iy + dy, ix + dx] * (fx - dx)

    u, v = _fade(fx), _fade(fy)
    top = corner(0, 0) * (1 - u) + corner(0, 1) * u
    bottom = corner(1, 0) * (1 - u) + corner(1, 1) * u
    return (math.sqrt(2.0) * (top * (1 - v) + bottom * v)).astype(np.float32)


def random_perlin_noise(
    shape: tuple[int, int],
    rng: np.random.Generator,
    min_scale: int = 0,
    max_scale: int = 6,
    rotate: float = 90.0,
) -> np.ndarray:
    """Noise with a random power-of-two frequency per axis (``2**k``, ``k`` in ``[min_scale, max_scale)``)
    rotated by a random angle in ``[-rotate, rotate]`` degrees."""
    ky, kx = rng.integers(min_scale, max_scale, size=2)
    angle = float(rng.uniform(-rotate, rotate)) if rotate else 0.0
    return perlin_noise(shape, (float(2**ky), float(2**kx)), rng, angle=angle)


def perlin_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    threshold: float = 0.5,
    min_scale: int = 0,
    max_scale: int = 6,
    rotate: float = 90.0,
    nonempty: bool = False,
    max_tries: int = 20,
) -> np.ndarray:
    """A boolean ``(H, W)`` mask: random-scale rotated Perlin noise above ``threshold``.

    With ``nonempty`` the noise is redrawn (at most ``max_tries`` times) until the mask has a pixel.
    """
    for _ in range(max_tries if nonempty else 1):
        mask = random_perlin_noise(shape, rng, min_scale, max_scale, rotate) > threshold
        if mask.any() or not nonempty:
            return mask
    return mask


def perlin_masks(
    n: int,
    shape: tuple[int, int],
    rng: np.random.Generator,
    threshold: float = 0.5,
    min_scale: int = 0,
    max_scale: int = 6,
    rotate: float = 90.0,
    nonempty: bool = False,
) -> np.ndarray:
    """A batch of ``n`` independent masks, ``(n, H, W)`` bool."""
    out = np.zeros((n, int(shape[0]), int(shape[1])), dtype=bool)
    for i in range(n):
        out[i] = perlin_mask(shape, rng, threshold, min_scale, max_scale, rotate, nonempty)
    return out
