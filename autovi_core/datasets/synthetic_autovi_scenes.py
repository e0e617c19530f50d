"""Scene rendering of ``synthetic_autovi``: six categories that imitate AutoVI's, in kind and difficulty.

Each category keeps the real category's name, aspect ratio, defect types and the nuisances its
normal images show (Table 4 of the AutoVI paper; ``docs/synthetic-autovi.md`` has the tables):

- ``engine_wiring`` (square): a fixed engine-bay scene with a corrugated cable running from a
  connector through a fastening module, and a blue hoop on a rubber hose. Normal: slight lighting
  changes and passing shadows, the fastening module's orientation and place vary, the cable's free
  stretches move, the hoop slides along the hose within a tolerance. Logical defects:
  ``fastening`` (the cable is not in the fastening module: it passes beside it, the slot is empty,
  the latch open) and ``blue_hoop`` (the hoop absent, or out of tolerance along the hose);
  ``multiple`` images have both.
- ``pipe_clip`` (square): a pipe connector with a small green locking clip, in front of one of three
  engine models (modes of normality, not equally frequent, each with the connector at its own
  place). Normal: item position and slight lighting changes. Defects: ``unclipped`` (the small clip
  pulled out and tilted) and ``operator`` (a gloved hand and sleeve in front of the scene).
- ``pipe_staple`` (square): a hose pushed onto a metal pipe and held by a large U-shaped staple, on
  one of three engine models (one rare; each with its own staple finish and connector place).
  Normal: item position changes. Defect: ``missing`` (the staple absent).
- ``tank_screw`` (4:3): a fixed scene on one of three fuel-tank models, with a small screw holding
  a bracket. Normal: a red receptacle that moves and turns, items that appear in some images at
  known places (a wiring loop, a cable, nuts and bolts: never in new places in test), slight
  position changes, some blurred pictures. Defect: ``missing`` (the screw, always at the same
  place, absent).
- ``underbody_pipes`` (4:3): a fixed underbody scene with brake lines, a corrugated pipe, clips and
  a heat shield. Normal: minor lighting changes, shards lying in some images. Defects:
  ``obstruction`` (a cable hanging in front of the scene), ``operator`` (an operator's arm in front
  of the scene) and ``multiple`` (both).
- ``underbody_screw`` (4:3): a casing (one of three models, each mounted at its own place) held by
  two screws. Normal: major lighting changes (gain, ramps, colour, deep shadows), lens flare in
  some images. Defect: ``missing`` (the left screw absent).

Every category also drifts over the production series: train images are the first shots and test
images later ones, and the lighting is a function of the shot's place in the series (``shot`` in
[0, 1]): the scene dims by ``Nuisances.dimming`` and warms (red up, blue down) by
``Nuisances.warming`` from the first shot to the last, so test goods are systematically darker and
warmer than train goods.

Every image is a pure function of (category, size, seed, split, folder, index, shot). A scene stream
draws the model, the camera (pose jitter, lighting, shadow, blur, flare, sensor noise) and every
normal variation; a separate defect stream draws the defects, so rendering the same image with
``with_defects=False`` gives its defect-free twin. The static part of each model's scene does not
depend on the seed (it is the factory, not the shot) and is cached per image size. Scenes are
painted in canonical coordinates (``u`` to the right, ``v`` down, in image heights, centred) on a
canvas with a margin, then warped by the pose together with the defect masks, so masks align with
the pixels they mark. The difficulty knobs (defect severities, model frequencies, nuisance
probabilities) are module constants and :class:`Nuisances` fields, tuned so that the ``fast``
profiles of PatchCore, PaDiM and EfficientAD land between chance and 95 mean image AUROC.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..errors import DataError
from .autovi import AUTOVI_CATEGORIES
from .synthetic_scenes import local_coords, sd_box, sd_circle

GENERATOR_VERSION = 2
"""Bump whenever the rendered pixels change: the default root is versioned, so caches regenerate."""

AUTOVI_NATIVE_SIZES: dict[str, tuple[int, int]] = dict(AUTOVI_CATEGORIES)
"""AutoVI's native (height, width) per category (``scale=1.0`` renders at this size)."""

SYNTHETIC_AUTOVI_CATEGORIES: tuple[str, ...] = tuple(AUTOVI_NATIVE_SIZES)

DEFAULT_SIZES: dict[str, tuple[int, int]] = {c: (128, 128) if h == w else (120, 160) for c, (h, w) in AUTOVI_NATIVE_SIZES.items()}
"""The reduced default (height, width): 128 x 128 for the square categories, 160 x 120 for the 4:3 ones."""

REFERENCE_HEIGHT = 128
"""Image height at which pixel-valued nuisances (jitter, blur) are specified; they scale with the height."""

Mask = np.ndarray  # (H, W) bool
Window = tuple[slice, slice]  # rows and columns of a crop
Coverage = np.ndarray  # (H, W) float32 in [0, 1]
Colour = tuple[float, float, float]


# --- specifications ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DefectSpec:
    """A defect type as written to ``defects_config.json``.

    ``threshold`` is the saturation share of the defect's area when ``relative``; for absolute
    thresholds it is None: the number of pixels is measured on the rendered training images
    (:func:`render`'s ``measures``) under the key ``measure``.
    """

    name: str
    pixel_value: int
    relative: bool
    threshold: float | None
    measure: str | None = None

    def config_entry(self, measured: int | None = None) -> dict[str, object]:
        """The JSON object of this defect (absolute thresholds from ``measured`` pixels)."""
        if self.relative:
            value: float | int = float(self.threshold or 1.0)
        else:
            if measured is None or measured < 1:
                raise DataError(f"defect {self.name!r}: absolute saturation needs a measured pixel count, got {measured!r}")
            value = int(measured)
        return {
            "defect_name": self.name,
            "pixel_value": self.pixel_value,
            "saturation_threshold": value,
            "relative_saturation": self.relative,
        }


@dataclass(frozen=True)
class Nuisances:
    """What varies between normal images of a category (all drawn from the scene stream)."""

    models: tuple[float, ...] = (1.0,)  # modes of normality (engine, tank or casing models): how often each is shot
    jitter: float = 1.5  # largest translation, pixels at REFERENCE_HEIGHT
    rotation: float = 1.0  # largest rotation, degrees
    gain: tuple[float, float] = (0.95, 1.05)  # lighting gain range
    gradient: float = 0.08  # largest amplitude of a linear lighting ramp across the image
    tint: float = 0.02  # per-channel colour jitter
    blur_probability: float = 0.0
    blur_sigma: tuple[float, float] = (1.0, 2.0)  # pixels at REFERENCE_HEIGHT
    flare_probability: float = 0.0
    shadow_probability: float = 0.0  # a soft-edged shadow cast across the scene (a passing operator, a robot arm)
    shadow_depth: tuple[float, float] = (0.15, 0.35)  # share of the light it takes
    dimming: float = 0.14  # drift: share of the light lost from the first shot to the last
    warming: float = 0.05  # drift: red gained and blue lost from the first shot to the last
    noise: float = 0.012  # sensor noise standard deviation


@dataclass(frozen=True)
class CategorySpec:
    """What the provider knows about a category before generating it."""

    name: str
    description: str
    defects: tuple[DefectSpec, ...]
    folders: dict[str, tuple[str, ...]]  # test defect folder -> defect names of its channels
    nuisances: Nuisances = field(default_factory=Nuisances)

    def native_size(self, scale: float | None = None) -> tuple[int, int]:
        """(height, width): the reduced default, or AutoVI's native size times ``scale``."""
        if scale is None:
            return DEFAULT_SIZES[self.name]
        height, width = AUTOVI_NATIVE_SIZES[self.name]
        return max(1, round(height * scale)), max(1, round(width * scale))


MISSING_SATURATION = 0.7
"""Saturation of missing items: 0.7 of the mask area (the AutoVI paper)."""

CATEGORY_SPECS: dict[str, CategorySpec] = {
    "engine_wiring": CategorySpec(
        "engine_wiring",
        "cable through a fastening module and a blue hoop on a hose; logical defects (unfastened cable, hoop absent or misplaced)",
        (DefectSpec("fastening", 255, True, 0.5), DefectSpec("blue_hoop", 254, False, None, "hoop_area")),
        {"fastening": ("fastening",), "blue_hoop": ("blue_hoop",), "multiple": ("fastening", "blue_hoop")},
        Nuisances(jitter=5.0, rotation=1.5, gain=(0.95, 1.05), gradient=0.06, shadow_probability=0.35),
    ),
    "pipe_clip": CategorySpec(
        "pipe_clip",
        "pipe connector with a small locking clip on three engine models; misplaced clip, operator in front",
        (DefectSpec("unclipped", 255, True, 0.5), DefectSpec("operator", 254, True, 0.5)),
        {"unclipped": ("unclipped",), "operator": ("operator",)},
        Nuisances(models=(0.55, 0.33, 0.12), jitter=9.0, rotation=3.0, gain=(0.92, 1.08), gradient=0.1, shadow_probability=0.15),
    ),
    "pipe_staple": CategorySpec(
        "pipe_staple",
        "hose held on a pipe by a large staple, three engine models; missing staple",
        (DefectSpec("missing", 255, True, MISSING_SATURATION),),
        {"missing": ("missing",)},
        Nuisances(models=(0.62, 0.33, 0.05), jitter=9.0, rotation=3.0, gain=(0.92, 1.08), gradient=0.1, shadow_probability=0.15),
    ),
    "tank_screw": CategorySpec(
        "tank_screw",
        "fuel tank (three models) with a small screw, a moving receptacle, items at known places, some blur; missing screw",
        (DefectSpec("missing", 255, True, MISSING_SATURATION),),
        {"missing": ("missing",)},
        Nuisances(
            models=(0.45, 0.35, 0.2),
            jitter=2.0,
            rotation=1.0,
            gain=(0.93, 1.07),
            gradient=0.08,
            blur_probability=0.15,
            blur_sigma=(1.0, 2.2),
            shadow_probability=0.2,
        ),
    ),
    "underbody_pipes": CategorySpec(
        "underbody_pipes",
        "underbody with brake lines and a corrugated pipe, shards in some images; cables and operators in front",
        (DefectSpec("obstruction", 255, True, 1.0), DefectSpec("operator", 254, True, 1.0)),
        {"obstruction": ("obstruction",), "operator": ("operator",), "multiple": ("obstruction", "operator")},
        Nuisances(jitter=1.0, rotation=0.5, gain=(0.94, 1.06), gradient=0.06, shadow_probability=0.1, shadow_depth=(0.1, 0.2)),
    ),
    "underbody_screw": CategorySpec(
        "underbody_screw",
        "casing (three models) held by two screws, major lighting changes, lens flare; missing left screw",
        (DefectSpec("missing", 255, True, MISSING_SATURATION),),
        {"missing": ("missing",)},
        Nuisances(
            models=(0.45, 0.35, 0.2),
            jitter=1.5,
            rotation=0.5,
            gain=(0.4, 1.4),
            gradient=0.5,
            tint=0.08,
            flare_probability=0.08,
            shadow_probability=0.2,
            shadow_depth=(0.15, 0.35),
        ),
    ),
}


# --- the pixel grid and drawing primitives --------------------------------------------------------
class Grid:
    """Canonical scene coordinates of every pixel: ``u`` right, ``v`` down, in image heights, centred.

    ``height`` x ``width`` is the image; a canvas adds ``margin`` pixels on every side, so that
    moving it by the camera's pose never brings in pixels from outside the scene.
    """

    def __init__(self, height: int, width: int, margin: int = 0) -> None:
        self.height, self.width, self.margin = height, width, margin
        self.shape = (height + 2 * margin, width + 2 * margin)
        ys, xs = np.mgrid[0 : self.shape[0], 0 : self.shape[1]].astype(np.float32)
        self.cx, self.cy = width / 2 + margin, height / 2 + margin  # where u = v = 0, in pixels
        self.u = (xs + 0.5 - self.cx) / height
        self.v = (ys + 0.5 - self.cy) / height
        self.half_width = width / height / 2  # u of the image's right edge

    def coverage(self, signed_distance: np.ndarray) -> Coverage:
        """Anti-aliased coverage of a shape given its signed distance in image heights."""
        return np.clip(0.5 - signed_distance * self.height, 0.0, 1.0).astype(np.float32)

    def px(self, pixels_at_reference: float) -> float:
        """A length given in pixels at :data:`REFERENCE_HEIGHT`, in this grid's pixels."""
        return pixels_at_reference * self.height / REFERENCE_HEIGHT

    def crop(self, cu: float, cv: float, reach: float) -> tuple[Grid, Window]:
        """The part of this grid within ``reach`` (image heights) of (cu, cv), and where it lies.

        Painting a small item on the crop (with the image's matching view, ``image[:, rows, columns]``)
        costs its size, not the image's.
        """
        return self.crop_box(cu - reach, cv - reach, cu + reach, cv + reach)

    def crop_box(self, u0: float, v0: float, u1: float, v1: float) -> tuple[Grid, Window]:
        """The part of this grid in the box [u0, u1] x [v0, v1], and where it lies (see :meth:`crop`)."""
        rows = slice(max(0, math.floor(v0 * self.height + self.cy)), max(0, math.ceil(v1 * self.height + self.cy) + 1))
        columns = slice(max(0, math.floor(u0 * self.height + self.cx)), max(0, math.ceil(u1 * self.height + self.cx) + 1))
        part = copy.copy(self)
        part.u, part.v = self.u[rows, columns], self.v[rows, columns]
        part.shape = part.u.shape
        part.cx, part.cy = self.cx - columns.start, self.cy - rows.start
        return part, (rows, columns)

    def embed(self, window: Window, coverage: Coverage) -> Coverage:
        """A coverage computed on a crop, as a coverage of this whole grid."""
        out = np.zeros(self.shape, np.float32)
        out[window] = coverage
        return out


@lru_cache(maxsize=32)
def grid_for(height: int, width: int, margin: int = 0) -> Grid:
    """The (shared, read-only) grid of an image size and margin."""
    return Grid(height, width, margin)


def canvas_for(category: str, size: tuple[int, int]) -> Grid:
    """The grid a category's scenes are painted on: the image plus the most its pose can move it."""
    height, width = size
    nuisances = CATEGORY_SPECS[category].nuisances
    reach = nuisances.jitter * height / REFERENCE_HEIGHT + 0.5 * math.hypot(height, width) * math.sin(math.radians(nuisances.rotation))
    return grid_for(height, width, math.ceil(reach) + 2)


def noise_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float | tuple[float, float]) -> np.ndarray:
    """Gaussian-filtered white noise (``sigma`` in pixels) normalised to unit standard deviation."""
    from scipy.ndimage import gaussian_filter  # not at the top: registering the dataset stays light

    field_ = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="reflect")
    return field_ / (field_.std() + 1e-8)


def paint(image: np.ndarray, colour: np.ndarray | Colour | float, alpha: Coverage) -> None:
    """Paint ``colour`` ((3, H, W), (H, W), an RGB triple or a grey level) over a (3, H, W) ``image`` in place."""
    colour = np.asarray(colour, dtype=np.float32)
    if colour.ndim == 1:
        colour = colour[:, None, None]
    image += (colour - image) * alpha


def tinted(luminance: np.ndarray, tint: Colour) -> np.ndarray:
    """A (3, H, W) colour image (channels first, as every image here) from a luminance map and an RGB tint."""
    return np.asarray(tint, dtype=np.float32)[:, None, None] * luminance


def bezier(controls: np.ndarray, count: int = 32) -> np.ndarray:
    """``count`` points of the Bezier curve with the given (k, 2) control points."""
    t = np.linspace(0.0, 1.0, count)[:, None]
    points = np.asarray(controls, dtype=np.float64)
    degree = len(points) - 1
    out = np.zeros((count, 2))
    for k, point in enumerate(points):
        out += math.comb(degree, k) * (1 - t) ** (degree - k) * t**k * point
    return out


FAR = 10.0
"""Distance reported for pixels farther than ``reach`` from a polyline (image heights)."""


def polyline_distance(grid: Grid, points: np.ndarray, reach: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: distance (image heights) to a polyline, and the parameter in [0, 1] of its nearest point.

    Only pixels within ``reach`` of a segment's bounding box are measured (the others read
    :data:`FAR` and 0), which keeps long curves cheap.
    """
    best = np.full(grid.shape, FAR, dtype=np.float32)
    where = np.zeros(grid.shape, dtype=np.float32)
    last = len(points) - 1
    rows, columns = grid.shape
    scale = grid.height
    for i in range(last):
        (au, av), (bu, bv) = points[i], points[i + 1]
        x0 = max(0, int(math.floor((min(au, bu) - reach) * scale + grid.cx)))
        x1 = min(columns, int(math.ceil((max(au, bu) + reach) * scale + grid.cx)) + 1)
        y0 = max(0, int(math.floor((min(av, bv) - reach) * scale + grid.cy)))
        y1 = min(rows, int(math.ceil((max(av, bv) + reach) * scale + grid.cy)) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        u, v = grid.u[y0:y1, x0:x1], grid.v[y0:y1, x0:x1]
        du, dv = bu - au, bv - av
        h = np.clip(((u - au) * du + (v - av) * dv) / (du * du + dv * dv + 1e-12), 0.0, 1.0)
        distance = np.hypot(u - au - h * du, v - av - h * dv)
        window, window_t = best[y0:y1, x0:x1], where[y0:y1, x0:x1]
        closer = distance < window
        window[closer] = distance[closer]
        window_t[closer] = ((i + h) / last)[closer]
    return best, where


def to_scene(points: np.ndarray, centre: tuple[float, float] | np.ndarray, angle: float) -> np.ndarray:
    """(k, 2) points given in coordinates local to ``centre`` rotated by ``angle`` (as :func:`local_coords`), in scene coordinates."""
    c, s = math.cos(angle), math.sin(angle)
    a, b = points[:, 0], points[:, 1]
    return np.stack([centre[0] + c * a - s * b, centre[1] + s * a + c * b], axis=1)


def tube(grid: Grid, distance: np.ndarray, radius: float, base: float, shine: float, tint: Colour) -> tuple[np.ndarray, Coverage]:
    """Colour and coverage of a round tube of ``radius`` around a curve (a distance map)."""
    across = np.clip(distance / radius, 0.0, 1.0)
    rounded = np.sqrt(1.0 - across**2)
    luminance = base * (0.55 + 0.45 * rounded) + shine * rounded**6
    return tinted(luminance, tint), grid.coverage(distance - radius)


def paint_tube(
    grid: Grid, image: np.ndarray, points: np.ndarray, radius: float, base: float, shine: float, tint: Colour, ridges: float = 0.0
) -> Coverage:
    """Paint a round tube of ``radius`` along a polyline (with ``ridges`` corrugations along it); returns its coverage."""
    reach = radius + 2.0 / grid.height
    (u0, v0), (u1, v1) = points.min(axis=0) - reach, points.max(axis=0) + reach
    part, window = grid.crop_box(u0, v0, u1, v1)
    distance, t = polyline_distance(part, points, reach)
    colour, cover = tube(part, distance, radius, base, shine, tint)
    if ridges:
        colour = colour * (0.8 + 0.2 * np.cos(t * 2 * math.pi * ridges))
    paint(image[(slice(None), *window)], colour, cover)
    return grid.embed(window, cover)


def ellipse_sd(a: np.ndarray, b: np.ndarray, ra: float, rb: float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse in local coordinates (a, b)."""
    k = np.hypot(a / ra, b / rb)
    return (k - 1.0) * min(ra, rb)


def hex_head(
    grid: Grid, image: np.ndarray, cu: float, cv: float, radius: float, angle: float, tint: Colour, washer: bool = True
) -> Coverage:
    """A lit hexagonal screw head (with its washer); returns the coverage of the whole screw."""
    part, window = grid.crop(cu, cv, radius + 2.0 / grid.height)
    view = image[(slice(None), *window)]
    u, v = part.u, part.v
    cover = np.zeros(part.shape, np.float32)
    if washer:
        ring = part.coverage(sd_circle(u, v, cu, cv, radius))
        paint(view, tinted(0.62 - 0.9 * ((u - cu) + (v - cv)), tint), ring)
        cover = np.maximum(cover, ring)
    a, b = local_coords(u, v, cu, cv, angle)
    hexagon = np.maximum.reduce([np.abs(a * math.cos(k * math.pi / 3) + b * math.sin(k * math.pi / 3)) for k in range(3)])
    inner = 0.68 * radius
    head = part.coverage(hexagon - inner)
    facet = np.arctan2(b, a)
    light = 0.5 + 0.22 * np.cos(np.round(facet / (math.pi / 3)) * (math.pi / 3) + math.pi / 4) + 0.2 * (hexagon < inner * 0.7)
    paint(view, tinted(light, tint), head)
    return grid.embed(window, np.maximum(cover, head))


# --- camera ----------------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def sensor_noise(height: int, width: int) -> np.ndarray:
    """A fixed (3, 2H, 2W) tile of unit Gaussian noise; each image takes an (H, W) window of it at a drawn offset."""
    tile = np.random.default_rng([height, width, 5150]).standard_normal((3, 2 * height, 2 * width), dtype=np.float32)
    tile.flags.writeable = False
    return tile


@dataclass(frozen=True)
class Camera:
    """Per-image acquisition conditions drawn from the scene stream."""

    dx: float  # translation, pixels
    dy: float
    angle: float  # rotation, radians
    gain: float
    tint: np.ndarray  # (3,) colour balance
    gradient: tuple[float, float]  # amplitude, direction (radians)
    blur: float  # Gaussian blur sigma in pixels (0: sharp)
    flare: tuple[float, float, float, float] | None  # source u, v, strength, streak angle
    shadow: tuple[float, float, float, float] | None  # edge direction (radians), edge offset, softness, depth
    noise: np.ndarray  # (3, H, W) sensor noise, unit standard deviation
    noise_level: float

    @classmethod
    def draw(cls, rng: np.random.Generator, grid: Grid, nuisances: Nuisances) -> Camera:
        """Draw one shot's conditions; the draws are the same whatever happens, so streams stay aligned."""
        jitter = grid.px(nuisances.jitter)
        dx, dy = rng.uniform(-jitter, jitter, 2)
        angle = math.radians(rng.uniform(-nuisances.rotation, nuisances.rotation))
        gain = rng.uniform(*nuisances.gain)
        tint = (1.0 + rng.uniform(-nuisances.tint, nuisances.tint, 3)).astype(np.float32)
        gradient = (rng.uniform(0.0, nuisances.gradient), rng.uniform(0.0, 2 * math.pi))
        blurred = rng.random() < nuisances.blur_probability
        blur_sigma = grid.px(rng.uniform(*nuisances.blur_sigma))
        flared = rng.random() < nuisances.flare_probability
        side = rng.choice([-1.0, 1.0])
        source = (side * rng.uniform(0.2, grid.half_width), rng.uniform(-0.5, -0.2))
        flare_source = (*source, rng.uniform(0.25, 0.6), rng.uniform(0.0, math.pi))
        shaded = rng.random() < nuisances.shadow_probability
        shadow = (rng.uniform(0.0, 2 * math.pi), rng.uniform(-0.35, 0.35), rng.uniform(0.02, 0.1), rng.uniform(*nuisances.shadow_depth))
        tile = sensor_noise(grid.height, grid.width)
        oy, ox = int(rng.integers(0, grid.height)), int(rng.integers(0, grid.width))
        noise = tile[:, oy : oy + grid.height, ox : ox + grid.width]
        blur, glare = (blur_sigma if blurred else 0.0), (flare_source if flared else None)
        return cls(dx, dy, angle, gain, tint, gradient, blur, glare, shadow if shaded else None, noise, nuisances.noise)

    def warp(self, canvas: Grid, layers: np.ndarray) -> np.ndarray:
        """Move (L, H', W') canvas layers by the pose and crop the image: (L, H, W), bilinear."""
        from PIL import Image

        c, s = math.cos(self.angle), math.sin(self.angle)
        ox, oy = canvas.width / 2 + self.dx, canvas.height / 2 + self.dy  # where the canvas centre lands
        affine = (c, s, canvas.cx - c * ox - s * oy, -s, c, canvas.cy + s * ox - c * oy)
        size = (canvas.width, canvas.height)
        bilinear, method = Image.Resampling.BILINEAR, Image.Transform.AFFINE
        return np.stack([np.asarray(Image.fromarray(layer, "F").transform(size, method, affine, resample=bilinear)) for layer in layers])

    def expose(self, grid: Grid, image: np.ndarray, shot: float, nuisances: Nuisances) -> np.ndarray:
        """Lighting (with the production drift at ``shot``), flare, blur and noise; quantised to uint8 RGB."""
        from scipy.ndimage import gaussian_filter

        amplitude, direction = self.gradient
        ramp = grid.u * math.cos(direction) + grid.v * math.sin(direction)
        drift = (1.0 - nuisances.dimming * shot) * (1.0 + nuisances.warming * shot * np.array([1.0, 0.0, -1.0], np.float32))
        brightness = self.gain * (1.0 + amplitude * ramp)
        if self.shadow is not None:
            edge, offset, softness, depth = self.shadow
            across = (grid.u * math.cos(edge) + grid.v * math.sin(edge) - offset) / softness
            brightness = brightness * (1.0 - depth * 0.5 * (1.0 + np.tanh(across)))
        light = (self.tint * drift)[:, None, None] * brightness
        out = image * light
        if self.flare is not None:
            out += flare(grid, *self.flare)
        if self.blur > 0:
            out = gaussian_filter(out, (0, self.blur, self.blur), mode="nearest")
        out += self.noise * np.float32(self.noise_level)
        return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()


def flare(grid: Grid, su: float, sv: float, strength: float, streak_angle: float) -> np.ndarray:
    """A lens flare from a bright source at (su, sv): glow, a streak, ghosts towards the centre and veiling glare."""
    u, v = grid.u, grid.v
    distance = np.hypot(u - su, v - sv)
    glow = np.exp(-((distance / 0.12) ** 2)) + 0.35 * np.exp(-distance / 0.3)
    a, b = local_coords(u, v, su, sv, streak_angle)
    streak = np.exp(-((b / 0.006) ** 2)) * np.exp(-np.abs(a) / 0.35)
    out = tinted(strength * (glow + 0.6 * streak), (1.0, 0.95, 0.85))
    for step, radius, colour in ((0.7, 0.05, (0.5, 1.0, 0.7)), (1.3, 0.09, (0.8, 0.6, 1.0)), (1.7, 0.03, (1.0, 0.8, 0.5))):
        gu, gv = su * (1 - step), sv * (1 - step)
        ghost = grid.coverage(sd_circle(u, v, gu, gv, radius)) * 0.12 * strength
        out += tinted(ghost, colour)
    return out + 0.04 * strength


# --- shared scene elements -------------------------------------------------------------------------
def engine_background(grid: Grid, rng: np.random.Generator, model: int) -> np.ndarray:
    """One of three engine models behind pipe_clip and pipe_staple: cast grey, brushed aluminium, black plastic."""
    h, w = grid.shape
    u, v = grid.u, grid.v
    mottle = noise_field(rng, (h, w), grid.px(6))
    grain = noise_field(rng, (h, w), grid.px(0.8))
    if model == 0:  # cast iron block with vertical ribs and two bolts
        lum = 0.24 + 0.03 * mottle + 0.012 * grain + 0.035 * np.sin(u * 2 * math.pi * 9)
        image = tinted(lum, (0.95, 0.96, 1.0))
        for cu, cv in ((-0.33, 0.33), (0.36, -0.36)):
            hex_head(grid, image, cu, cv, 0.045, 0.3, (0.95, 0.95, 0.92))
    elif model == 1:  # brushed aluminium with a diagonal rubber hose
        brushed = noise_field(rng, (h, w), (grid.px(0.6), grid.px(10)))
        image = tinted(0.5 + 0.03 * brushed + 0.03 * mottle, (1.0, 0.99, 0.96))
        hose, cover = tube(grid, polyline_distance(grid, np.array([[-0.6, -0.45], [0.6, 0.45]]))[0], 0.05, 0.16, 0.1, (1.0, 1.0, 1.0))
        paint(image, hose, cover)
    else:  # black plastic cover with horizontal texture and a yellow label
        texture = noise_field(rng, (h, w), (grid.px(6), grid.px(0.7)))
        image = tinted(0.11 + 0.02 * texture + 0.015 * mottle, (1.0, 1.0, 1.0))
        label = grid.coverage(sd_box(u + 0.28, v - 0.32, 0.13, 0.07, 0.01))
        paint(image, tinted(0.8 + 0.03 * grain, (1.0, 0.85, 0.2)), label)
        paint(image, 0.1, grid.coverage(sd_box(u + 0.28, v - 0.32, 0.09, 0.008)))
    return image


def operator(grid: Grid, rng: np.random.Generator, image: np.ndarray, scale: float) -> Coverage:
    """An operator's gloved hand and sleeve reaching in from an image edge; returns its coverage."""
    u, v = grid.u, grid.v
    edge = int(rng.integers(0, 4))
    along = rng.uniform(-0.35, 0.35)
    reach = rng.uniform(0.2, 0.45) * scale
    half_w = grid.half_width
    starts = ((-half_w - 0.1, along), (half_w + 0.1, along), (along, -0.6), (along, 0.6))
    directions = ((1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0))
    start = np.array(starts[edge])
    turn = rng.uniform(-0.5, 0.5)
    d = np.array(directions[edge])
    d = np.array([d[0] * math.cos(turn) - d[1] * math.sin(turn), d[0] * math.sin(turn) + d[1] * math.cos(turn)])
    hand = start + d * (0.1 + reach)
    arm_radius = rng.uniform(0.07, 0.1) * scale
    sleeve_colour = [(0.12, 0.16, 0.3), (0.95, 0.55, 0.1), (0.2, 0.2, 0.22)][int(rng.integers(0, 3))]
    glove_colour = [(0.15, 0.25, 0.6), (0.75, 0.75, 0.72), (0.08, 0.08, 0.09)][int(rng.integers(0, 3))]
    folds = noise_field(rng, grid.shape, grid.px(5))
    arm_d, _ = polyline_distance(grid, np.array([start - d * 0.5, hand - d * arm_radius]), arm_radius + 0.01)
    arm_colour, arm = tube(grid, arm_d, arm_radius, 0.9, 0.1, sleeve_colour)
    paint(image, arm_colour * (1.0 + 0.08 * folds), arm)
    a, b = local_coords(u, v, hand[0], hand[1], math.atan2(d[1], d[0]))
    palm = grid.coverage(ellipse_sd(a, b, arm_radius * 1.2, arm_radius * 1.05))
    fingers = np.zeros(grid.shape, np.float32)
    for k, spread in enumerate((-0.6, -0.2, 0.2, 0.6)):
        length = arm_radius * (1.2 + 0.25 * (k in (1, 2)))
        base = np.array([arm_radius * 0.8, spread * arm_radius])
        tip = base + length * np.array([1.0, spread * 0.4])
        finger_d, _ = polyline_distance(grid, to_scene(np.array([base, tip]), hand, math.atan2(d[1], d[0])), arm_radius)
        fingers = np.maximum(fingers, grid.coverage(finger_d - arm_radius * 0.22))
    glove = np.maximum(palm, fingers)
    shade = 0.85 + 0.15 * np.clip(-b / (arm_radius * 1.5), -1.0, 1.0) + 0.06 * folds
    paint(image, tinted(shade, glove_colour), glove)
    return np.maximum(arm, glove)


# --- the scene of one image ------------------------------------------------------------------------
@dataclass
class Scene:
    """What a category painter returns: the canonical image, its defect coverages and measured layers."""

    image: np.ndarray
    defects: dict[str, Coverage] = field(default_factory=dict)
    measured: dict[str, Coverage] = field(default_factory=dict)


Painter = Callable[[Grid, np.ndarray, int, np.random.Generator, np.random.Generator, tuple[str, ...]], Scene]


# --- engine_wiring --------------------------------------------------------------------------------
HOSE_V = 0.24
HOOP_U = 0.02
CONNECTOR = (-0.3, -0.06)
FASTENER = (0.12, -0.03)
CABLE_EXIT = (0.62, -0.2)
CABLE_RADIUS = 0.022
CABLE_STRETCH = 16  # points per Bezier stretch of the cable
HOOP_SLIDE = 0.06  # normal slide of the blue hoop along its hose
HOOP_MISPLACED = (0.0, 0.04)  # how far beyond the normal slide a misplaced hoop lies
UNFASTENED_OFFSET = (0.012, 0.035)  # how far the unfastened cable lies from the module's slot


def engine_wiring_static(grid: Grid, rng: np.random.Generator, model: int) -> np.ndarray:
    """The fixed engine bay: block, cam cover with ribs, a rubber hose, a connector and bolts."""
    u, v = grid.u, grid.v
    mottle = noise_field(rng, grid.shape, grid.px(6))
    image = tinted(0.2 + 0.03 * mottle + 0.01 * noise_field(rng, grid.shape, grid.px(0.8)), (0.96, 0.97, 1.0))
    cover = sd_box(u, v + 0.33, 0.47, 0.14, 0.05)
    paint(image, tinted(0.15 + 0.02 * np.sin(u * 2 * math.pi * 14) + 0.02 * mottle, (1.0, 1.0, 1.0)), grid.coverage(cover))
    paint(image, 0.3, grid.coverage(np.abs(cover + 0.004) - 0.003))
    hose_d = np.abs(v - HOSE_V - 0.02 * np.sin(u * 3.0))
    hose, hose_cover = tube(grid, hose_d, 0.06, 0.12, 0.12, (1.0, 1.0, 1.0))
    paint(image, hose, hose_cover)
    a, b = local_coords(u, v, *CONNECTOR, 0.0)
    paint(image, tinted(0.34 + 0.1 * (b < -0.02), (0.9, 0.92, 1.0)), grid.coverage(sd_box(a + 0.03, b, 0.07, 0.055, 0.01)))
    for cu, cv in ((-0.4, 0.4), (0.38, 0.05), (0.4, 0.42)):
        hex_head(grid, image, cu, cv, 0.035, 0.2, (0.95, 0.95, 0.95))
    return image


def cable_points(via: tuple[float, float], wobble: np.ndarray) -> np.ndarray:
    """Points of the cable from the connector through ``via`` (point ``CABLE_STRETCH - 1``) to the right edge."""
    into = [CONNECTOR, [CONNECTOR[0] + 0.14, CONNECTOR[1] + 0.1 + wobble[0]], [via[0] - 0.12, via[1] + wobble[1]], via]
    out_of = [via, [via[0] + 0.15, via[1] + wobble[2]], [0.45, CABLE_EXIT[1] + wobble[3]], CABLE_EXIT]
    first, second = bezier(np.array(into), CABLE_STRETCH), bezier(np.array(out_of), CABLE_STRETCH)
    return np.concatenate([first, second[1:]])


def unfasten(points: np.ndarray, offset: tuple[float, float], spread: float) -> np.ndarray:
    """The cable pulled out of the fastening module: the points near it moved by ``offset``, fading with ``spread``."""
    index = np.arange(len(points))
    weight = np.exp(-(((index - (CABLE_STRETCH - 1)) / spread) ** 2))[:, None]
    return points + weight * np.asarray(offset)


def paint_cable(grid: Grid, image: np.ndarray, points: np.ndarray) -> Coverage:
    """A black corrugated conduit along ``points``; returns its coverage."""
    return paint_tube(grid, image, points, CABLE_RADIUS, 0.1, 0.1, (1.0, 1.0, 1.0), ridges=60)


def paint_engine_wiring(
    grid: Grid, static: np.ndarray, model: int, scene: np.random.Generator, defect: np.random.Generator, names: tuple[str, ...]
) -> Scene:
    """The fastening module, the cable through it and the blue hoop (see the module docstring)."""
    image = static.copy()
    module_angle = math.radians(scene.uniform(-8.0, 8.0))
    wobble = scene.uniform(-0.05, 0.05, 4)
    fastener = (FASTENER[0] + scene.uniform(-0.02, 0.02), FASTENER[1] + scene.uniform(-0.02, 0.02))
    hoop_slide = scene.uniform(-HOOP_SLIDE, HOOP_SLIDE)
    hoop_tilt = math.radians(scene.uniform(-8.0, 8.0))
    hoop_width = scene.uniform(0.013, 0.019)
    out = Scene(image)

    # the fastening module: a grey plastic bracket whose slot holds the cable under a latch
    module, window = grid.crop(*fastener, 0.1)
    view = image[(slice(None), *window)]
    a, b = local_coords(module.u, module.v, *fastener, module_angle)
    paint(view, tinted(0.2 + 0.06 * (b < -0.02), (0.95, 0.97, 1.0)), module.coverage(sd_box(a, b + 0.01, 0.065, 0.045, 0.008)))
    slot = module.coverage(sd_box(a, b, 0.03, CABLE_RADIUS + 0.004, 0.003))
    paint(view, 0.15, slot)

    nominal = cable_points(fastener, wobble)
    if "fastening" not in names:
        paint_cable(grid, image, nominal)
        paint(view, 0.45, module.coverage(sd_box(a, b, 0.008, CABLE_RADIUS + 0.01, 0.002)))  # the closed latch
    else:
        angle = module_angle + math.pi / 2 + defect.uniform(-0.6, 0.6)
        distance = defect.choice([-1.0, 1.0]) * defect.uniform(*UNFASTENED_OFFSET)
        actual = unfasten(nominal, (distance * math.cos(angle), distance * math.sin(angle)), defect.uniform(2.0, 4.5))
        paint_cable(grid, image, actual)
        la, lb = local_coords(module.u, module.v, fastener[0] + 0.012, fastener[1] - 0.012, module_angle + 0.3)
        paint(view, 0.45, module.coverage(sd_box(la, lb, 0.008, CABLE_RADIUS + 0.01, 0.002)))  # the latch, swung open
        apart = np.hypot(*(actual - nominal).T) > CABLE_RADIUS * 0.5
        region = grid.embed(window, slot)
        for points in (nominal[apart], actual[apart]):
            if len(points) >= 2:
                region = np.maximum(region, grid.coverage(polyline_distance(grid, points, CABLE_RADIUS + 0.01)[0] - CABLE_RADIUS))
        out.defects["fastening"] = region

    # the blue hoop around the hose
    nominal_u = HOOP_U + hoop_slide
    hoop_u: float | None = nominal_u
    if "blue_hoop" in names:
        if defect.random() < 0.2:
            hoop_u = None  # absent
        else:
            hoop_u = HOOP_U + defect.choice([-1.0, 1.0]) * (HOOP_SLIDE + defect.uniform(*HOOP_MISPLACED))  # out of tolerance

    def hoop(centre: float, paint_it: bool) -> Coverage:
        centre_v = HOSE_V + 0.02 * math.sin(centre * 3.0)
        part, window = grid.crop(centre, centre_v, 0.09)
        ha, hb = local_coords(part.u, part.v, centre, centre_v, hoop_tilt)
        cover = part.coverage(sd_box(ha, hb, hoop_width, 0.072, 0.01))
        if paint_it:
            shine = 0.55 + 0.35 * np.sqrt(np.clip(1 - (hb / 0.072) ** 2, 0, 1)) + 0.15 * np.cos(ha / hoop_width * math.pi)
            paint(image[(slice(None), *window)], tinted(shine, (0.12, 0.38, 0.9)), cover)
        return grid.embed(window, cover)

    if hoop_u is not None:
        out.measured["hoop_area"] = hoop(hoop_u, True)
    if "blue_hoop" in names:
        region = hoop(nominal_u, False)
        if hoop_u is not None:
            region = np.maximum(region, out.measured["hoop_area"])
        out.defects["blue_hoop"] = region
    return out


# --- pipe_clip ------------------------------------------------------------------------------------
ITEM_OFFSETS = ((0.0, 0.0), (-0.14, 0.08), (0.12, -0.09))
"""Where the inspected item sits on each engine model (pipe_clip, pipe_staple): each model is a mode of normality."""

CLIP_SEAT = (0.0, -0.1)  # relative to the connector
UNCLIPPED_LIFT = (0.008, 0.03)  # how far a misplaced clip is pulled out of its seat
UNCLIPPED_TURN = (4.0, 20.0)  # and how much it is tilted, degrees


def pipe_clip_static(grid: Grid, rng: np.random.Generator, model: int) -> np.ndarray:
    """An engine model, a rubber hose from the left, a rigid pipe to the upper right and the connector body."""
    ou, ov = ITEM_OFFSETS[model]
    image = engine_background(grid, rng, model)
    hose_path = bezier(np.array([[-0.7, 0.25 + ov], [-0.3 + ou, 0.2 + ov], [-0.15 + ou, ov], [-0.04 + ou, ov]]))
    hose, cover = tube(grid, polyline_distance(grid, hose_path, 0.1)[0], 0.075, 0.12, 0.1, (1, 1, 1))
    paint(image, hose, cover)
    pipe_path = np.array([[0.04 + ou, ov], [0.3 + ou, -0.05 + ov], [0.7 + ou, -0.4 + ov]])
    pipe, cover = tube(grid, polyline_distance(grid, pipe_path, 0.1)[0], 0.05, 0.55, 0.3, (0.95, 0.97, 1.0))
    paint(image, pipe, cover)
    a, b = local_coords(grid.u, grid.v, ou, ov, 0.0)
    body = grid.coverage(sd_box(a, b, 0.075, 0.085, 0.015))
    paint(image, tinted(0.38 + 0.08 * np.cos(a / 0.075 * math.pi / 2) - 0.05 * (b > 0.04), (0.85, 0.9, 1.0)), body)
    paint(image, 0.2, grid.coverage(sd_box(a, b - 0.03, 0.075, 0.004)))
    return image


def clip_cover(grid: Grid, cu: float, cv: float, angle: float) -> tuple[np.ndarray, np.ndarray, Coverage]:
    """Local coordinates and coverage of the locking clip (a bar with a finger tab) at (cu, cv)."""
    a, b = local_coords(grid.u, grid.v, cu, cv, angle)
    return a, b, grid.coverage(np.minimum(sd_box(a, b, 0.042, 0.016, 0.004), sd_box(a, b + 0.018, 0.014, 0.01, 0.003)))


def paint_pipe_clip(
    grid: Grid, static: np.ndarray, model: int, scene: np.random.Generator, defect: np.random.Generator, names: tuple[str, ...]
) -> Scene:
    """The small green locking clip on the connector; defects move it or put an operator in front."""
    image = static.copy()
    ou, ov = ITEM_OFFSETS[model]
    seat = (ou + CLIP_SEAT[0] + scene.uniform(-0.006, 0.006), ov + CLIP_SEAT[1] + scene.uniform(-0.004, 0.004))
    seat_angle = math.radians(scene.uniform(-3.0, 3.0))
    out = Scene(image)
    clip = (*seat, seat_angle)
    if "unclipped" in names:
        lift = defect.uniform(*UNCLIPPED_LIFT)
        slide = defect.uniform(-0.02, 0.02)
        turn = math.radians(defect.choice([-1.0, 1.0]) * defect.uniform(*UNCLIPPED_TURN))
        clip = (seat[0] + slide, seat[1] - lift, seat_angle + turn)
    part, window = grid.crop(*seat, 0.1)
    view = image[(slice(None), *window)]
    if "unclipped" in names:
        paint(view, 0.12, part.coverage(sd_box(*local_coords(part.u, part.v, *seat, seat_angle), 0.03, 0.005)))  # the empty seat
    a, b, cover = clip_cover(part, *clip)
    paint(view, tinted(0.75 + 0.2 * np.cos(a / 0.042 * math.pi / 2) - 0.25 * (np.abs(a) < 0.006), (0.25, 0.75, 0.3)), cover)
    if "unclipped" in names:
        out.defects["unclipped"] = grid.embed(window, np.maximum(cover, clip_cover(part, *seat, seat_angle)[2]))
    if "operator" in names:
        out.defects["operator"] = operator(grid, defect, image, defect.uniform(0.5, 1.0))
    return out


# --- pipe_staple ----------------------------------------------------------------------------------
STAPLE_WIRE = 0.006  # radius of the staple's wire
STAPLE_FINISH = (0.45, 0.36, 0.24)  # the staple's brightness per engine model: zinc, dull, black oxide


def pipe_staple_static(grid: Grid, rng: np.random.Generator, model: int) -> np.ndarray:
    """An engine model (cast, aluminium or black, mirrored from pipe_clip's), a hose on a metal pipe, the collar."""
    ou, ov = ITEM_OFFSETS[(model + 1) % 3]
    image = engine_background(grid, rng, (model + 1) % 3)[:, :, ::-1].copy()
    hose_path = np.array([[-0.7, 0.12 + ov], [-0.06 + ou, 0.02 + ov]])
    hose, cover = tube(grid, polyline_distance(grid, hose_path, 0.12)[0], 0.09, 0.12, 0.12, (1, 1, 1))
    paint(image, hose, cover)
    pipe_path = np.array([[0.06 + ou, 0.02 + ov], [0.7 + ou, -0.05 + ov]])
    pipe, cover = tube(grid, polyline_distance(grid, pipe_path, 0.1)[0], 0.065, 0.6, 0.35, (0.96, 0.97, 1.0))
    paint(image, pipe, cover)
    a, b = local_coords(grid.u, grid.v, ou, 0.02 + ov, -0.08)
    collar = grid.coverage(sd_box(a, b, 0.06, 0.1, 0.01))
    paint(image, tinted(0.3 + 0.08 * np.sqrt(np.clip(1 - (b / 0.1) ** 2, 0, 1)), (0.9, 0.9, 0.95)), collar)
    for side in (-1.0, 1.0):  # the two slots the staple's legs go through
        paint(image, 0.27, grid.coverage(sd_box(a - side * 0.03, b + 0.085, 0.009, 0.011, 0.003)))
    return image


def staple_cover(grid: Grid, centre: tuple[float, float]) -> tuple[np.ndarray, Coverage]:
    """Distance map and coverage of the U-shaped staple: two legs across the collar joined by an arc."""
    arc = np.array([[0.03 * math.cos(t), -0.115 - 0.03 * math.sin(t)] for t in np.linspace(0, math.pi, 9)])
    points = np.concatenate([[[0.03, 0.13]], arc, [[-0.03, 0.13]]])
    distance, _ = polyline_distance(grid, to_scene(points, centre, -0.08), 0.05)
    return distance, grid.coverage(distance - STAPLE_WIRE)


def paint_pipe_staple(
    grid: Grid, static: np.ndarray, model: int, scene: np.random.Generator, defect: np.random.Generator, names: tuple[str, ...]
) -> Scene:
    """The large staple on the connector (absent for ``missing``)."""
    image = static.copy()
    ou, ov = ITEM_OFFSETS[(model + 1) % 3]
    centre = (ou + scene.uniform(-0.005, 0.005), 0.02 + ov + scene.uniform(-0.005, 0.005))
    finish = STAPLE_FINISH[model] + scene.uniform(-0.08, 0.08)
    distance, cover = staple_cover(grid, centre)
    out = Scene(image)
    if "missing" in names:
        out.defects["missing"] = cover
    else:
        colour, _ = tube(grid, distance, STAPLE_WIRE, finish, 0.3, (0.97, 0.97, 1.0))
        shadow = grid.coverage(staple_cover(grid, (centre[0] + 0.008, centre[1] + 0.008))[0] - STAPLE_WIRE)
        paint(image, 0.05, shadow * 0.6)
        paint(image, colour, cover)
    return out


# --- tank_screw -----------------------------------------------------------------------------------
TANK_SCREW = (0.2, -0.1)
TANK_SCREW_RADIUS = 0.055
KNOWN_PLACES = ("wiring", "cable", "nuts")


def tank_screw_static(grid: Grid, rng: np.random.Generator, model: int) -> np.ndarray:
    """A fuel-tank model (moulded HDPE with its rib pattern), a metal strap and the screw's bracket."""
    u, v = grid.u, grid.v
    mottle = noise_field(rng, grid.shape, grid.px(8))
    base = (0.1, 0.17, 0.13)[model]
    ribs = (np.sin(v * 2 * math.pi * 7), np.sin((u + v) * 2 * math.pi * 5), np.sin(u * 2 * math.pi * 6) * np.sin(v * 2 * math.pi * 6))[
        model
    ]
    image = tinted(base + 0.035 * ribs + 0.015 * mottle, ((1.0, 1.0, 1.0), (0.95, 0.97, 1.0), (0.9, 0.95, 1.05))[model])
    if model == 2:  # a white label on this model
        paint(image, 0.78, grid.coverage(sd_box(u + 0.2, v + 0.3, 0.12, 0.06, 0.01)))
        paint(image, 0.15, grid.coverage(sd_box(u + 0.2, v + 0.3, 0.09, 0.005)))
    strap_d = np.abs(v - 0.12 - 0.05 * u)
    strap, cover = tube(grid, strap_d, 0.035, 0.5, 0.2, (0.95, 0.96, 1.0))
    paint(image, strap, cover)
    a, b = local_coords(u, v, *TANK_SCREW, 0.0)
    paint(image, tinted(0.42 + 0.06 * (b < 0), (0.96, 0.96, 1.0)), grid.coverage(sd_box(a, b, 0.07, 0.05, 0.01)))
    paint(image, 0.03, grid.coverage(sd_circle(u, v, *TANK_SCREW, 0.02)))  # the threaded hole
    return image


def paint_tank_screw(
    grid: Grid, static: np.ndarray, model: int, scene: np.random.Generator, defect: np.random.Generator, names: tuple[str, ...]
) -> Scene:
    """The moving red receptacle, items at known places and the small screw (absent for ``missing``)."""
    image = static.copy()
    receptacle = (scene.uniform(-0.55, -0.25), scene.uniform(0.05, 0.3), scene.uniform(-0.12, 0.12))
    present = scene.random(len(KNOWN_PLACES)) < 0.35
    wiring = scene.uniform(-0.03, 0.03, 4)
    nuts = scene.uniform(-0.05, 0.05, (4, 2))
    nut_count = int(scene.integers(1, 5))
    screw_angle = scene.uniform(0, math.pi / 3)

    part, window = grid.crop(receptacle[0], receptacle[1], 0.13)
    view = image[(slice(None), *window)]
    a, b = local_coords(part.u, part.v, *receptacle)
    paint(view, tinted(0.55 + 0.125 * np.clip(-b / 0.07, -1, 1), (1.0, 0.16, 0.12)), part.coverage(sd_box(a, b, 0.1, 0.07, 0.02)))
    paint(view, (0.3, 0.06, 0.045), part.coverage(sd_box(a, b, 0.07, 0.045, 0.015)))
    if present[0]:  # a wiring loop at the upper left
        loop = bezier(
            np.array([[-0.75, -0.38], [-0.45 + wiring[0], -0.1 + wiring[1]], [-0.2 + wiring[2], -0.45 + wiring[3]], [-0.55, -0.55]])
        )
        paint_tube(grid, image, loop, 0.014, 0.12, 0.1, (1.0, 1.0, 1.0))
    if present[1]:  # an orange cable along the top right
        cable = bezier(np.array([[0.1, -0.6], [0.3 + wiring[0], -0.35], [0.55 + wiring[1], -0.42], [0.75, -0.3]]))
        paint_tube(grid, image, cable, 0.016, 0.75, 0.2, (1.0, 0.5, 0.12))
    if present[2]:  # nuts and bolts at the lower right
        for k in range(nut_count):
            hex_head(grid, image, 0.5 + nuts[k, 0], 0.33 + nuts[k, 1], 0.022, nuts[k, 0] * 20, (0.9, 0.9, 0.85), washer=False)
    screw = hex_head(grid, np.zeros_like(image), *TANK_SCREW, TANK_SCREW_RADIUS, screw_angle, (1.0, 1.0, 1.0))
    out = Scene(image)
    if "missing" in names:
        out.defects["missing"] = screw
    else:
        hex_head(grid, image, *TANK_SCREW, TANK_SCREW_RADIUS, screw_angle, (0.97, 0.97, 0.92))
    return out


# --- underbody_pipes ------------------------------------------------------------------------------
def underbody_pipes_static(grid: Grid, rng: np.random.Generator, model: int) -> np.ndarray:
    """The fixed underbody: stamped panel, heat shield, brake lines with clips and a corrugated pipe."""
    u, v = grid.u, grid.v
    mottle = noise_field(rng, grid.shape, grid.px(7))
    image = tinted(0.26 + 0.03 * mottle + 0.03 * np.sign(np.sin(v * 2 * math.pi * 3)), (0.95, 0.96, 1.0))
    shield = grid.coverage(sd_box(u - 0.5, v + 0.05, 0.22, 0.35, 0.04))
    dimples = 0.04 * np.cos(u * 2 * math.pi * 16) * np.cos(v * 2 * math.pi * 16)
    paint(image, tinted(0.58 + dimples + 0.03 * mottle, (1.0, 0.98, 0.94)), shield)
    corrugated = np.abs(v - 0.22 - 0.04 * np.sin(u * 2.5))
    colour, cover = tube(grid, corrugated, 0.05, 0.1, 0.1, (1.0, 1.0, 1.0))
    paint(image, colour * (0.8 + 0.2 * np.cos(u * 2 * math.pi * 40)), cover)
    for k, level in enumerate((-0.2, -0.12, -0.04)):
        line = np.abs(v - level - 0.03 * np.sin(u * 2.0 + k))
        colour, cover = tube(grid, line, 0.011, 0.65, 0.35, (0.95, 0.97, 1.0))
        paint(image, colour, cover)
    for cu in (-0.45, 0.0, 0.35):
        paint(image, 0.08, grid.coverage(sd_box(u - cu, v + 0.12 - 0.03 * math.sin(cu * 2.0 + 1), 0.025, 0.11, 0.01)))
    return image


def paint_underbody_pipes(
    grid: Grid, static: np.ndarray, model: int, scene: np.random.Generator, defect: np.random.Generator, names: tuple[str, ...]
) -> Scene:
    """Shards in some images; a cable or an operator (or both) in front of the scene for defects."""
    image = static.copy()
    shards = int(scene.integers(1, 4)) if scene.random() < 0.3 else 0
    shard_draws = scene.uniform(0.0, 1.0, (3, 4))
    for k in range(shards):
        su = (shard_draws[k, 0] - 0.5) * 2 * grid.half_width * 0.9
        sv = (shard_draws[k, 1] - 0.5) * 0.9
        size = 0.008 + 0.014 * shard_draws[k, 3]
        part, window = grid.crop(su, sv, size * 2)
        a, b = local_coords(part.u, part.v, su, sv, shard_draws[k, 2] * math.pi)
        paint(image[(slice(None), *window)], 0.85, part.coverage(np.maximum(np.abs(a) + 0.6 * np.abs(b) - size, np.abs(b) - size * 0.6)))
    out = Scene(image)
    if "obstruction" in names:
        top = defect.uniform(-grid.half_width, grid.half_width)
        end = np.array([defect.uniform(-grid.half_width, grid.half_width), 0.6])
        sag = defect.uniform(-0.3, 0.3, 2)
        cable = bezier(np.array([[top, -0.6], [top + sag[0], 0.0], [end[0] + sag[1], 0.1], end]))
        radius = defect.uniform(0.005, 0.022)
        kind = int(defect.integers(0, 4))  # black, dark grey, orange or green-yellow insulation
        tint = ((1.0, 1.0, 1.0), (0.95, 0.97, 1.0), (1.0, 0.55, 0.15), (0.7, 0.9, 0.25))[kind]
        base = (0.1, 0.3, 0.6, 0.6)[kind]
        out.defects["obstruction"] = paint_tube(grid, image, cable, radius, base, 0.15, tint)
    if "operator" in names:
        out.defects["operator"] = operator(grid, defect, image, defect.uniform(0.5, 1.2))
    return out


# --- underbody_screw ------------------------------------------------------------------------------
SCREWS = ((-0.36, 0.02), (0.36, 0.02))  # left, right; relative to the casing
SCREW_RADIUS = 0.055
CASING_OFFSETS = ((0.0, 0.0), (0.07, -0.05), (-0.06, 0.06))
"""Where each casing model sits in the fixed scene."""
SCREW_FINISH: tuple[Colour, ...] = ((0.95, 0.95, 0.9), (0.72, 0.72, 0.76), (0.85, 0.8, 0.62))
"""The screws of each casing model: bright zinc, dull zinc, yellow zinc."""


def underbody_screw_static(grid: Grid, rng: np.random.Generator, model: int) -> np.ndarray:
    """The underbody and a casing model (cast aluminium, black ribbed or grey), with its two screw bosses."""
    ou, ov = CASING_OFFSETS[model]
    u, v = grid.u - ou, grid.v - ov
    mottle = noise_field(rng, grid.shape, grid.px(7))
    image = tinted(0.2 + 0.025 * mottle, (0.95, 0.96, 1.0))
    shape = (sd_box(u, v, 0.45, 0.2, 0.08), sd_box(u, v + 0.02, 0.43, 0.24, 0.02), ellipse_sd(u, v, 0.46, 0.25))[model]
    lum = (0.55 + 0.04 * mottle, 0.12 + 0.03 * np.sin(u * 2 * math.pi * 12), 0.36 + 0.03 * mottle)[model]
    paint(image, tinted(lum - 0.08 * np.clip(v / 0.25, -1, 1), (1.0, 0.99, 0.96)), grid.coverage(shape))
    for cu, cv in SCREWS:
        paint(image, (0.45, 0.2, 0.4)[model], grid.coverage(sd_circle(u, v, cu, cv, SCREW_RADIUS + 0.02)))
        paint(image, 0.03, grid.coverage(sd_circle(u, v, cu, cv, 0.025)))
    return image


def paint_underbody_screw(
    grid: Grid, static: np.ndarray, model: int, scene: np.random.Generator, defect: np.random.Generator, names: tuple[str, ...]
) -> Scene:
    """The two screws (the left one absent for ``missing``)."""
    image = static.copy()
    angles = scene.uniform(0, math.pi / 3, 2)
    ou, ov = CASING_OFFSETS[model]
    out = Scene(image)
    for k, (cu, cv) in enumerate(SCREWS):
        if k == 0 and "missing" in names:
            out.defects["missing"] = hex_head(grid, np.zeros_like(image), cu + ou, cv + ov, SCREW_RADIUS, angles[k], (1.0, 1.0, 1.0))
            continue
        hex_head(grid, image, cu + ou, cv + ov, SCREW_RADIUS, angles[k], SCREW_FINISH[model])
    return out


# --- rendering one image -------------------------------------------------------------------------
STATIC: dict[str, Callable[[Grid, np.random.Generator, int], np.ndarray]] = {
    "engine_wiring": engine_wiring_static,
    "pipe_clip": pipe_clip_static,
    "pipe_staple": pipe_staple_static,
    "tank_screw": tank_screw_static,
    "underbody_pipes": underbody_pipes_static,
    "underbody_screw": underbody_screw_static,
}

PAINTERS: dict[str, Painter] = {
    "engine_wiring": paint_engine_wiring,
    "pipe_clip": paint_pipe_clip,
    "pipe_staple": paint_pipe_staple,
    "tank_screw": paint_tank_screw,
    "underbody_pipes": paint_underbody_pipes,
    "underbody_screw": paint_underbody_screw,
}

_SPLITS = {"train": 0, "test": 1}


@lru_cache(maxsize=64)
def static_scene(category: str, model: int, height: int, width: int) -> np.ndarray:
    """The static part of a model's scene at a size (seed-independent, cached, read-only)."""
    rng = np.random.default_rng([SYNTHETIC_AUTOVI_CATEGORIES.index(category), model, 4242])
    image = STATIC[category](canvas_for(category, (height, width)), rng, model).astype(np.float32)
    image.flags.writeable = False
    return image


def image_streams(category: str, seed: int, split: str, folder: str, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The (scene, defect) random streams of one image."""
    folders = ("good", *CATEGORY_SPECS[category].folders)
    key = [seed, SYNTHETIC_AUTOVI_CATEGORIES.index(category), _SPLITS[split], folders.index(folder), index, 7]
    scene, defect = np.random.SeedSequence(key).spawn(2)
    return np.random.default_rng(scene), np.random.default_rng(defect)


@dataclass(frozen=True)
class Rendered:
    """One rendered image: uint8 RGB, its defect channels as (name, mask), and measured pixel counts."""

    image: np.ndarray
    channels: list[tuple[str, Mask]]
    measures: dict[str, int]


def render(
    category: str,
    *,
    size: tuple[int, int],
    seed: int,
    split: str,
    folder: str,
    index: int,
    shot: float,
    with_defects: bool = True,
) -> Rendered:
    """Render one image of ``category`` at ``size`` (height, width) taken at ``shot`` in [0, 1] of the series."""
    if category not in CATEGORY_SPECS:
        raise DataError(f"unknown synthetic_autovi category {category!r}; valid: {', '.join(SYNTHETIC_AUTOVI_CATEGORIES)}")
    spec = CATEGORY_SPECS[category]
    if folder != "good" and folder not in spec.folders:
        raise DataError(f"{category}: unknown folder {folder!r}; valid: good, {', '.join(spec.folders)}")
    canvas = canvas_for(category, size)
    scene_rng, defect_rng = image_streams(category, seed, split, folder, index)
    names = spec.folders.get(folder, ()) if with_defects else ()
    camera = Camera.draw(scene_rng, canvas, spec.nuisances)
    model = int(scene_rng.choice(len(spec.nuisances.models), p=spec.nuisances.models))
    scene = PAINTERS[category](canvas, static_scene(category, model, *size), model, scene_rng, defect_rng, names)
    defect_names = [n for n in names if n in scene.defects]
    layers = [*scene.image]
    layers += [scene.defects[n] for n in defect_names] + list(scene.measured.values())
    warped = camera.warp(canvas, np.stack(layers).astype(np.float32, copy=False))
    image = camera.expose(grid_for(*size), warped[:3], shot, spec.nuisances)
    channels = [(n, warped[3 + k] >= 0.5) for k, n in enumerate(defect_names)]
    offset = 3 + len(defect_names)
    measures = {name: int((warped[offset + k] >= 0.5).sum()) for k, name in enumerate(scene.measured)}
    return Rendered(image, channels, measures)


def render_image(
    category: str,
    *,
    size: tuple[int, int],
    seed: int,
    split: str,
    folder: str,
    index: int,
    shot: float,
    with_defects: bool = True,
) -> tuple[np.ndarray, list[tuple[str, Mask]]]:
    """One image as uint8 RGB and its defect channels (``with_defects=False``: its defect-free twin)."""
    out = render(category, size=size, seed=seed, split=split, folder=folder, index=index, shot=shot, with_defects=with_defects)
    return out.image, out.channels
