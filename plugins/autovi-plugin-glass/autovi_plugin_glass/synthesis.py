"""GLASS's two anomaly syntheses (paper: GAS and LAS).

Global anomaly synthesis (GAS), in feature space: Gaussian noise ``eps ~ N(0, sigma^2 I)`` is added to
every normal adapted feature ``u``; a few steps of normalised gradient ascent on the discriminator's
loss of the synthetic feature (labelled anomalous) move it towards what the discriminator still takes
for normal, ``eps <- eps + eta * grad / ||grad||``, and after each step the truncated projection puts
the perturbation's norm back into ``[r1, r2]`` (paper: ``r1 = r``, ``r2 = 2r``):
``eps <- eps * clip(||eps||, r1, r2) / ||eps||`` (:func:`truncated_projection`). For normal features
distributed on a hypersphere rather than a manifold, the perturbation must also point away from the
normal features' centre ``c`` (:func:`outward_projection`, autovi's reading of that constraint).

Local anomaly synthesis (LAS), in image space: a Perlin mask (:func:`autovi_core.synthesis.perlin_mask`)
selects where an augmented texture is blended into the image with the image's share ``beta`` drawn
from a normal distribution; a feature position is anomalous when at least half of its cell of pixels
is masked (:func:`cell_fractions`, :func:`las_sample`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from autovi_core.synthesis import AnomalySource, augment_source, blend_anomaly, perlin_mask

from .networks import bce

# --- global anomaly synthesis (feature space) -----------------------------------------------------------


def truncated_projection(perturbation: torch.Tensor, r1: float, r2: float) -> torch.Tensor:
    """Rescale every row of (P, D) ``perturbation`` so that its norm lies in ``[r1, r2]`` (direction kept;
    a zero row stays zero)."""
    norm = perturbation.norm(dim=1, keepdim=True)
    return perturbation * (norm.clamp(r1, r2) / norm.clamp_min(1e-12))


def outward_projection(perturbation: torch.Tensor, normal: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Reflect the component of each perturbation that points towards ``center`` (D,) from its normal
    feature (rows of ``normal``): the norm is kept and ``||u + eps - c|| >= ||u - c||``."""
    radial = normal - center
    unit = radial / radial.norm(dim=1, keepdim=True).clamp_min(1e-12)
    along = (perturbation * unit).sum(dim=1, keepdim=True)
    return perturbation - 2.0 * along.clamp(max=0.0) * unit


def project(perturbation: torch.Tensor, normal: torch.Tensor, r1: float, r2: float, center: torch.Tensor | None = None) -> torch.Tensor:
    """The truncated projection, then (``center`` given: hypersphere distribution) the outward one."""
    out = truncated_projection(perturbation, r1, r2)
    return out if center is None else outward_projection(out, normal, center)


@contextlib.contextmanager
def frozen_batch_norm(module: nn.Module) -> Iterator[None]:
    """Batch norm layers keep normalising with the batch's statistics but do not update their running
    statistics (momentum 0) inside the block."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


def gas_perturbation(
    discriminator: nn.Module,
    normal: torch.Tensor,
    noise: torch.Tensor,
    *,
    eta: float,
    steps: int,
    r1: float,
    r2: float,
    center: torch.Tensor | None = None,
) -> torch.Tensor:
    """The GAS perturbations (P, D) of normal features ``normal`` (P, D), starting from ``noise``.

    Each step evaluates the discriminator on the normal and the synthetic features together (the
    batch its batch norm sees in training, running statistics untouched), ascends the BCE of the
    synthetic ones against the anomalous label by ``eta`` along the row-normalised gradient, and
    projects (:func:`project`). The discriminator's parameters receive no gradient. With ``steps = 0``
    the noise is returned as it is (SimpleNet's Gaussian-noise anomalies).
    """
    normal = normal.detach()
    eps = noise.detach().clone()
    with frozen_batch_norm(discriminator):
        for _ in range(steps):
            synthetic = (normal + eps).requires_grad_(True)
            logits = discriminator(torch.cat([normal, synthetic]))[normal.shape[0] :]
            loss = bce(logits, 1.0) * logits.numel()  # the sum: the step is normalised anyway
            (grad,) = torch.autograd.grad(loss, synthetic)
            eps = eps + eta * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
            eps = project(eps, normal, r1, r2, center)
    return eps.detach()


# --- local anomaly synthesis (image space) --------------------------------------------------------------


def cell_fractions(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Share of set pixels of the (H, W) ``mask`` in each cell of an ``grid`` = (h, w) partition, cells
    bounded as adaptive average pooling bounds them (rows ``floor(iH/h)`` to ``ceil((i+1)H/h)``)."""
    m = np.asarray(mask, dtype=np.float64)
    height, width = m.shape
    h, w = grid
    integral = np.zeros((height + 1, width + 1))
    integral[1:, 1:] = m.cumsum(0).cumsum(1)
    ys, ye = (np.arange(h) * height) // h, -((-(np.arange(h) + 1) * height) // h)
    xs, xe = (np.arange(w) * width) // w, -((-(np.arange(w) + 1) * width) // w)
    sums = integral[np.ix_(ye, xe)] - integral[np.ix_(ys, xe)] - integral[np.ix_(ye, xs)] + integral[np.ix_(ys, xs)]
    return (sums / np.outer(ye - ys, xe - xs)).astype(np.float32)


def las_mask(
    shape: tuple[int, int],
    grid: tuple[int, int],
    rng: np.random.Generator,
    *,
    threshold: float = 0.5,
    max_scale: int = 6,
    max_tries: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """A Perlin mask (H, W) bool and its feature-grid labels (h, w) bool (cells at least half masked),
    redrawn (at most ``max_tries`` times) until a cell is labelled."""
    for _ in range(max_tries):
        mask = perlin_mask(shape, rng, threshold=threshold, max_scale=max_scale, nonempty=True)
        labels = cell_fractions(mask, grid) >= 0.5
        if labels.any():
            break
    return mask, labels


def las_sample(
    image: np.ndarray,
    source: AnomalySource,
    rng: np.random.Generator,
    grid: tuple[int, int],
    *,
    threshold: float = 0.5,
    max_scale: int = 6,
    beta_mean: float = 0.5,
    beta_std: float = 0.1,
    beta_range: tuple[float, float] = (0.2, 0.8),
    augment: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One LAS sample of an (H, W, 3) float image in [0, 1]: ``(image with the anomaly, pixel mask (H, W)
    bool, grid labels (h, w) bool)``. The texture is drawn from ``source`` (augmented with three of
    DRAEM's operations) and blended inside the mask, the image keeping the share
    ``beta ~ N(beta_mean, beta_std^2)`` clipped to ``beta_range``."""
    shape = image.shape[:2]
    mask, labels = las_mask(shape, grid, rng, threshold=threshold, max_scale=max_scale)
    texture = source.sample(shape, rng)
    if augment:
        texture = augment_source(texture, rng)
    beta = float(np.clip(rng.normal(beta_mean, beta_std), *beta_range))
    return blend_anomaly(image, texture, mask, beta), mask, labels
