"""Scene rendering of the built-in synthetic dataset: procedurally rendered inspection images.

Three categories mimic the kinds of AutoVI defects and variability:

- ``textured_plate``: a brushed-metal plate with drilled holes; structural defects ``scratch``
  (a thin bright or dark curved line) and ``spot`` (stain or dent blobs).
- ``clip_assembly``: a painted bracket with four screws and a pipe held by an orange clip; logical
  defects ``missing_screw`` (a screw absent, its hole visible) and ``misplaced_clip`` (the clip
  shifted along the pipe and/or rotated).

- ``wire_harness``: a painted bracket with a loose cable between two connectors whose path varies
  freely from part to part, as AutoVI's ``engine_wiring`` cables do (normal variability that
  unsupervised detectors tend to flag); defects ``spot`` (stains and dents on the bracket) and
  ``bare_wire`` (a stretch of cable without its insulation).

Each category also has a ``multiple`` folder whose images carry both defect types (two ground-truth
channels with different pixel values), as AutoVI's ``engine_wiring`` and ``underbody_pipes`` do.

Every image is a pure function of (category, size, seed, split, folder, index): a scene stream
draws the pose jitter (translation, slight rotation), lighting (gain and gradient), the part's
texture and the sensor noise; a separate defect stream draws the defects, so rendering the same
image without defects gives its defect-free twin (:func:`render_image`). Writing categories to disk
and the dataset provider are in :mod:`autovi_core.datasets.synthetic`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import DataError

GENERATOR_VERSION = 1
"""Bump whenever the rendered pixels change: the default root is versioned, so caches regenerate."""

SYNTHETIC_CATEGORIES: tuple[str, ...] = ("textured_plate", "clip_assembly", "wire_harness")

DEFAULT_SIZE = 128

FloatImage = np.ndarray  # (H, W, 3) float32 in [0, 1] (before quantisation)
Mask = np.ndarray  # (H, W) bool


@dataclass(frozen=True)
class DefectSpec:
    """A defect type of a category as written to ``defects_config.json``."""

    name: str
    pixel_value: int
    relative: bool
    threshold: float  # share of the area when relative, else a fraction of size**2 (see config_entry)

    def config_entry(self, size: int) -> dict[str, object]:
        """The JSON object of this defect; absolute thresholds become an int number of pixels."""
        value: float | int = float(self.threshold) if self.relative else max(1, round(self.threshold * size * size))
        return {
            "defect_name": self.name,
            "pixel_value": self.pixel_value,
            "saturation_threshold": value,
            "relative_saturation": self.relative,
        }


@dataclass(frozen=True)
class CategorySpec:
    """What the provider knows about a category before generating it."""

    name: str
    description: str
    defects: tuple[DefectSpec, ...]
    folders: dict[str, tuple[str, ...]]  # test defect folder -> defect names of its channels

    def native_size(self, size: int = DEFAULT_SIZE) -> tuple[int, int]:
        return (size, size)


# Geometry is in "unit" part coordinates: (u, v) in about [-0.5, 0.5], centred on the part.
SCREW_RADIUS = 0.045
SCREW_CENTRES = ((-0.31, -0.24), (0.31, -0.24), (-0.31, 0.24), (0.31, 0.24))
PLATE_HOLES = ((-0.335, -0.295), (0.335, -0.295), (-0.335, 0.295), (0.335, 0.295))
CONNECTORS = ((-0.36, -0.22), (0.36, -0.22))
CABLE_HALF_WIDTH = 0.022
BRACKET_SPOT_AREA = ((-0.27, 0.17), (0.27, 0.28))  # (u, v) low and high corners of where spots fall

CATEGORY_SPECS: dict[str, CategorySpec] = {
    "textured_plate": CategorySpec(
        "textured_plate",
        "brushed-metal plate; structural defects (scratches, stains and dents)",
        (DefectSpec("scratch", 255, True, 1.0), DefectSpec("spot", 254, False, math.pi * 0.04**2)),
        {"scratch": ("scratch",), "spot": ("spot",), "multiple": ("scratch", "spot")},
    ),
    "clip_assembly": CategorySpec(
        "clip_assembly",
        "bracket with four screws and a clipped pipe; logical defects (missing screw, misplaced clip)",
        (
            DefectSpec("missing_screw", 255, False, math.pi * SCREW_RADIUS**2),
            DefectSpec("misplaced_clip", 254, True, 1.0),
        ),
        {
            "missing_screw": ("missing_screw",),
            "misplaced_clip": ("misplaced_clip",),
            "multiple": ("missing_screw", "misplaced_clip"),
        },
    ),
    "wire_harness": CategorySpec(
        "wire_harness",
        "bracket with a loose cable whose path varies between parts; defects on the bracket and the cable",
        (DefectSpec("spot", 255, False, math.pi * 0.04**2), DefectSpec("bare_wire", 254, True, 1.0)),
        {"spot": ("spot",), "bare_wire": ("bare_wire",), "multiple": ("spot", "bare_wire")},
    ),
}


# --- geometry and noise primitives ---------------------------------------------------------------
@dataclass(frozen=True)
class Pose:
    """Placement of the part in the image: translation in pixels and rotation in radians."""

    dx: float
    dy: float
    angle: float


class Frame:
    """The pixel grid of one image and the part coordinates (u, v) of every pixel under a pose."""

    def __init__(self, size: int, pose: Pose) -> None:
        self.size = size
        self.pose = pose
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        self.xs, self.ys = xs, ys
        c, s = math.cos(pose.angle), math.sin(pose.angle)
        x = xs - size / 2 - pose.dx
        y = ys - size / 2 - pose.dy
        self.u = (c * x + s * y) / size
        self.v = (-s * x + c * y) / size

    def to_image(self, u: np.ndarray | float, v: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (x, y) of part coordinates (u, v)."""
        c, s = math.cos(self.pose.angle), math.sin(self.pose.angle)
        x = self.size / 2 + self.pose.dx + self.size * (c * np.asarray(u) - s * np.asarray(v))
        y = self.size / 2 + self.pose.dy + self.size * (s * np.asarray(u) + c * np.asarray(v))
        return x, y

    def coverage(self, signed_distance: np.ndarray) -> np.ndarray:
        """Anti-aliased coverage in [0, 1] of a shape given its signed distance in unit coordinates."""
        return np.clip(0.5 - signed_distance * self.size, 0.0, 1.0)


def local_coords(u: np.ndarray, v: np.ndarray, cu: float, cv: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates relative to a centre, in a frame rotated by ``angle``."""
    c, s = math.cos(angle), math.sin(angle)
    du, dv = u - cu, v - cv
    return c * du + s * dv, -s * du + c * dv


def sd_box(a: np.ndarray, b: np.ndarray, half_w: float, half_h: float, radius: float = 0.0) -> np.ndarray:
    """Signed distance to a rounded box centred on the origin of local coordinates (a, b)."""
    qa = np.abs(a) - half_w + radius
    qb = np.abs(b) - half_h + radius
    outside = np.hypot(np.maximum(qa, 0.0), np.maximum(qb, 0.0))
    return outside + np.minimum(np.maximum(qa, qb), 0.0) - radius


def sd_circle(u: np.ndarray, v: np.ndarray, cu: float, cv: float, radius: float) -> np.ndarray:
    return np.hypot(u - cu, v - cv) - radius


def smooth_noise(rng: np.random.Generator, size: int, sigma: float | tuple[float, float]) -> np.ndarray:
    """Gaussian-filtered white noise normalised to unit standard deviation."""
    from scipy.ndimage import gaussian_filter  # not at the top: registering the dataset stays light

    field = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma, mode="wrap")
    return field / (field.std() + 1e-8)


def blend(image: FloatImage, colour: np.ndarray, alpha: np.ndarray) -> FloatImage:
    """Paint ``colour`` ((H, W, 3) or (3,)) over ``image`` with per-pixel opacity ``alpha``."""
    a = alpha[:, :, None]
    return image * (1.0 - a) + colour * a


def grey(luminance: np.ndarray, tint: tuple[float, float, float]) -> FloatImage:
    return luminance[:, :, None] * np.asarray(tint, dtype=np.float32)


@dataclass(frozen=True)
class Camera:
    """Per-image acquisition conditions drawn from the scene stream."""

    pose: Pose
    gain: float
    gradient: tuple[float, float]  # amplitude, direction (radians)
    noise: np.ndarray  # (H, W, 3) sensor noise

    @classmethod
    def draw(cls, rng: np.random.Generator, size: int) -> Camera:
        jitter = 3.0 * size / 128
        pose = Pose(rng.uniform(-jitter, jitter), rng.uniform(-jitter, jitter), math.radians(rng.uniform(-2.0, 2.0)))
        gain = rng.uniform(0.9, 1.1)
        gradient = (rng.uniform(0.0, 0.12), rng.uniform(0.0, 2 * math.pi))
        noise = rng.normal(0.0, 0.012, (size, size, 3)).astype(np.float32)
        return cls(pose, gain, gradient, noise)

    def expose(self, frame: Frame, image: FloatImage) -> np.ndarray:
        """Apply lighting and sensor noise and quantise to uint8 RGB."""
        amplitude, direction = self.gradient
        centred_x, centred_y = frame.xs - frame.size / 2, frame.ys - frame.size / 2
        ramp = (centred_x * math.cos(direction) + centred_y * math.sin(direction)) / frame.size
        light = self.gain * (1.0 + amplitude * ramp)
        out = image * light[:, :, None] + self.noise
        return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


# --- textured_plate --------------------------------------------------------------------------------
def render_plate(frame: Frame, rng: np.random.Generator) -> FloatImage:
    """A brushed-metal plate with four drilled holes on a dark conveyor."""
    size, scale = frame.size, frame.size / 128
    background = 0.16 + 0.015 * smooth_noise(rng, size, 3 * scale)
    image = grey(background, (0.92, 0.95, 1.0))
    sd = sd_box(frame.u, frame.v, 0.41, 0.37, 0.07)
    brushed = smooth_noise(rng, size, (0.6 * scale, 9 * scale))
    mottle = smooth_noise(rng, size, 10 * scale)
    bevel = np.exp(-np.abs(sd) * size / 1.5) * (sd < 0)
    metal = 0.56 + 0.03 * brushed + 0.02 * mottle + 0.08 * bevel
    for cu, cv in PLATE_HOLES:
        hole = frame.coverage(sd_circle(frame.u, frame.v, cu, cv, 0.03))
        metal = metal * (1.0 - hole) + 0.07 * hole
    return blend(image, grey(metal, (1.0, 0.98, 0.94)), frame.coverage(sd))


def add_scratch(frame: Frame, rng: np.random.Generator, image: FloatImage) -> Mask:
    """Draw a thin curved bright or dark line on the plate; returns its mask."""
    start = rng.uniform(-0.27, 0.27, 2)
    direction = rng.uniform(0, 2 * math.pi)
    length = rng.uniform(0.15, 0.35)
    end = np.clip(start + length * np.array([math.cos(direction), math.sin(direction)]), -0.3, 0.3)
    normal = np.array([-math.sin(direction), math.cos(direction)])
    control = (start + end) / 2 + normal * rng.uniform(-0.3, 0.3) * length
    t = np.linspace(0.0, 1.0, 96, dtype=np.float32)[:, None]
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
    px, py = frame.to_image(points[:, 0], points[:, 1])
    d2 = (frame.xs[..., None] - px) ** 2 + (frame.ys[..., None] - py) ** 2
    nearest = np.argmin(d2, axis=-1)
    distance = np.sqrt(np.take_along_axis(d2, nearest[..., None], axis=-1)[..., 0])
    taper = 0.4 + 0.6 * np.sin(math.pi * t[nearest, 0])
    half_width = rng.uniform(0.5, 1.1) * frame.size / 128
    profile = np.clip(half_width + 1.0 - distance, 0.0, 1.0) * taper
    contrast = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.35)
    image += contrast * profile[:, :, None]
    return distance <= half_width + 0.5


def add_spots(
    frame: Frame,
    rng: np.random.Generator,
    image: FloatImage,
    area: tuple[tuple[float, float], tuple[float, float]] = ((-0.27, -0.27), (0.27, 0.27)),
) -> Mask:
    """Draw one or two irregular stains or dents with centres in ``area`` (part coordinates); returns their mask."""
    mask = np.zeros((frame.size, frame.size), dtype=bool)
    for _ in range(int(rng.integers(1, 3))):
        cx, cy = frame.to_image(*rng.uniform(area[0], area[1]))
        radius = rng.uniform(0.028, 0.06) * frame.size
        dx, dy = frame.xs - cx, frame.ys - cy
        angle = np.arctan2(dy, dx)
        wobble = 1 + 0.2 * np.sin(2 * angle + rng.uniform(0, 6.3)) + 0.1 * np.sin(3 * angle + rng.uniform(0, 6.3))
        inside = np.clip(radius * wobble - np.hypot(dx, dy) + 0.5, 0.0, 1.0)
        if rng.random() < 0.5:  # stain: darker, brownish
            tint = np.array([0.7, 0.62, 0.52], dtype=np.float32)
            strength = rng.uniform(0.6, 1.0)
            image *= 1.0 - strength * inside[:, :, None] * (1.0 - tint)
        else:  # dent: lit on one side, shadowed on the other
            light = rng.uniform(0, 2 * math.pi)
            shade = (dx * math.cos(light) + dy * math.sin(light)) / radius
            image += (rng.uniform(0.14, 0.22) * shade - 0.06)[:, :, None] * inside[:, :, None]
        mask |= inside >= 0.5
    return mask


# --- clip_assembly ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipPose:
    """Clip placement in part coordinates: centre along the pipe (u, v) and rotation in radians."""

    u: float
    v: float
    angle: float


def clip_coverage(frame: Frame, pose: ClipPose) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of the clip (band around the pipe plus its tab) and its local across-coordinate."""
    a, b = local_coords(frame.u, frame.v, pose.u, pose.v, pose.angle)
    band = sd_box(a, b, 0.05, 0.105, 0.012)
    tab = sd_box(a, b + 0.125, 0.022, 0.03, 0.008)
    return frame.coverage(np.minimum(band, tab)), a / 0.05


def render_assembly(frame: Frame, rng: np.random.Generator, missing: frozenset[int], clip: ClipPose) -> FloatImage:
    """The bracket, its screws (``missing`` ones leave their hole), the pipe and the clip."""
    size, u, v = frame.size, frame.u, frame.v
    image = grey(0.13 + 0.012 * smooth_noise(rng, size, 3 * size / 128), (0.95, 0.95, 1.0))
    sd = sd_box(u, v, 0.42, 0.35, 0.04)
    paint = 0.42 + 0.02 * smooth_noise(rng, size, 6 * size / 128) - 0.06 * np.exp(-np.abs(sd) * size / 2.0)
    image = blend(image, grey(paint, (0.86, 0.9, 1.0)), frame.coverage(sd))
    slot_angles = rng.uniform(0, math.pi, len(SCREW_CENTRES))
    for index, (cu, cv) in enumerate(SCREW_CENTRES):
        if index in missing:
            witness = frame.coverage(sd_circle(u, v, cu, cv, 0.032))
            image = blend(image, np.float32(0.3), witness * 0.5)
            image = blend(image, np.float32(0.05), frame.coverage(sd_circle(u, v, cu, cv, 0.022)))
            continue
        radial = sd_circle(u, v, cu, cv, SCREW_RADIUS)
        shade = 0.72 - 0.12 * ((u - cu) + (v - cv)) / SCREW_RADIUS - 0.25 * (radial > -0.007)
        head = grey(shade, (1.0, 1.0, 0.97))
        for slot in (slot_angles[index], slot_angles[index] + math.pi / 2):
            a, b = local_coords(u, v, cu, cv, slot)
            head = blend(head, np.float32(0.18), frame.coverage(sd_box(a, b, 0.032, 0.006)))
        image = blend(image, head, frame.coverage(radial))
    across = np.clip(v / 0.07, -1.0, 1.0)
    pipe = 0.08 + 0.22 * np.sqrt(1.0 - across**2) + 0.25 * np.exp(-(((across + 0.45) / 0.15) ** 2))
    image = blend(image, grey(pipe, (0.95, 0.95, 1.0)), frame.coverage(np.abs(v) - 0.07))
    alpha, a = clip_coverage(frame, clip)
    ribs = 0.8 + 0.2 * np.sqrt(np.clip(1.0 - a**2, 0.0, 1.0))
    return blend(image, grey(ribs, (0.95, 0.58, 0.14)), alpha)


def draw_misplacement(rng: np.random.Generator, nominal: ClipPose) -> ClipPose:
    """A clip shifted along the pipe, rotated, or both."""
    mode = rng.integers(0, 3)
    shift = rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.2) if mode != 1 else 0.0
    turn = rng.choice([-1.0, 1.0]) * math.radians(rng.uniform(12.0, 30.0)) if mode != 0 else 0.0
    return ClipPose(nominal.u + shift, nominal.v, nominal.angle + turn)


# --- wire_harness ----------------------------------------------------------------------------------
def draw_cable(rng: np.random.Generator) -> np.ndarray:
    """(64, 2) points of the cable: a cubic Bezier between the connectors with random inner controls."""
    start, end = np.array(CONNECTORS[0]), np.array(CONNECTORS[1])
    first = np.array([rng.uniform(-0.36, 0.12), rng.uniform(-0.46, 0.14)])
    second = np.array([rng.uniform(-0.12, 0.36), rng.uniform(-0.46, 0.14)])
    t = np.linspace(0.0, 1.0, 64)[:, None]
    return (1 - t) ** 3 * start + 3 * (1 - t) ** 2 * t * first + 3 * (1 - t) * t**2 * second + t**3 * end


def cable_geometry(frame: Frame, cable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: distance to the cable in pixels, and the curve parameter t in [0, 1] of its nearest point."""
    px, py = frame.to_image(cable[:, 0], cable[:, 1])
    d2 = (frame.xs[..., None] - px) ** 2 + (frame.ys[..., None] - py) ** 2
    nearest = np.argmin(d2, axis=-1)
    distance = np.sqrt(np.take_along_axis(d2, nearest[..., None], axis=-1)[..., 0])
    return distance, nearest / (len(cable) - 1)


def bare_wire_mask(frame: Frame, cable: np.ndarray, stretch: tuple[float, float]) -> Mask:
    """Pixels of the cable between curve parameters ``stretch``."""
    distance, t = cable_geometry(frame, cable)
    return (distance <= CABLE_HALF_WIDTH * frame.size + 0.5) & (t >= stretch[0]) & (t <= stretch[1])


def render_harness(frame: Frame, rng: np.random.Generator, cable: np.ndarray, bare: tuple[float, float] | None) -> FloatImage:
    """The bracket, the two connectors and the cable (copper showing on the ``bare`` stretch)."""
    size, u, v = frame.size, frame.u, frame.v
    image = grey(0.13 + 0.012 * smooth_noise(rng, size, 3 * size / 128), (0.95, 0.95, 1.0))
    sd = sd_box(u, v, 0.43, 0.37, 0.04)
    paint = 0.5 + 0.02 * smooth_noise(rng, size, 6 * size / 128) - 0.07 * np.exp(-np.abs(sd) * size / 2.0)
    image = blend(image, grey(paint, (1.0, 0.93, 0.78)), frame.coverage(sd))
    for cu, cv in CONNECTORS:
        a, b = local_coords(u, v, cu, cv, 0.0)
        body = frame.coverage(sd_box(a, b, 0.045, 0.06, 0.01))
        image = blend(image, grey(0.2 + 0.1 * (b < 0), (0.9, 0.92, 1.0)), body)
    distance, t = cable_geometry(frame, cable)
    half_width = CABLE_HALF_WIDTH * size
    across = np.clip(distance / half_width, 0.0, 1.0)
    rounded = np.sqrt(1.0 - across**2)
    insulation = grey(0.06 + 0.16 * rounded**4, (1.0, 1.0, 1.0))
    if bare is not None:
        copper = grey(0.35 + 0.55 * rounded**2, (1.0, 0.62, 0.33))
        exposed = ((t >= bare[0]) & (t <= bare[1])).astype(np.float32)
        insulation = blend(insulation, copper, exposed)
    return blend(image, insulation, np.clip(half_width + 0.5 - distance, 0.0, 1.0))


def draw_bare_stretch(rng: np.random.Generator) -> tuple[float, float]:
    start = rng.uniform(0.2, 0.7)
    return start, start + rng.uniform(0.08, 0.15)


# --- rendering one image -------------------------------------------------------------------------
_SPLITS = {"train": 0, "test": 1}


def image_streams(category: str, seed: int, split: str, folder: str, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The (scene, defect) random streams of one image."""
    folders = ("good", *CATEGORY_SPECS[category].folders)
    key = [seed, SYNTHETIC_CATEGORIES.index(category), _SPLITS[split], folders.index(folder), index]
    scene, defect = np.random.SeedSequence(key).spawn(2)
    return np.random.default_rng(scene), np.random.default_rng(defect)


def render_image(
    category: str, *, size: int, seed: int, split: str, folder: str, index: int, with_defects: bool = True
) -> tuple[np.ndarray, list[tuple[str, Mask]]]:
    """One image as uint8 RGB and its defect channels as (defect name, mask) pairs.

    ``with_defects=False`` renders the defect-free twin of a defective image (same scene stream).
    """
    if category not in CATEGORY_SPECS:
        raise DataError(f"unknown synthetic category {category!r}; valid: {', '.join(SYNTHETIC_CATEGORIES)}")
    scene_rng, defect_rng = image_streams(category, seed, split, folder, index)
    names = CATEGORY_SPECS[category].folders.get(folder, ()) if with_defects else ()
    camera = Camera.draw(scene_rng, size)
    frame = Frame(size, camera.pose)
    channels: list[tuple[str, Mask]] = []
    if category == "textured_plate":
        image = render_plate(frame, scene_rng)
        painters = {"scratch": add_scratch, "spot": add_spots}
        for name in names:
            channels.append((name, painters[name](frame, defect_rng, image)))
    elif category == "clip_assembly":
        nominal = ClipPose(scene_rng.uniform(-0.006, 0.006), 0.0, math.radians(scene_rng.uniform(-2.0, 2.0)))
        missing: frozenset[int] = frozenset()
        clip = nominal
        for name in names:
            if name == "missing_screw":
                screw = int(defect_rng.integers(0, len(SCREW_CENTRES)))
                missing = frozenset({screw})
                cu, cv = SCREW_CENTRES[screw]
                channels.append((name, frame.coverage(sd_circle(frame.u, frame.v, cu, cv, SCREW_RADIUS)) >= 0.5))
            else:
                clip = draw_misplacement(defect_rng, nominal)
                union = np.maximum(clip_coverage(frame, nominal)[0], clip_coverage(frame, clip)[0])
                channels.append((name, union >= 0.5))
        image = render_assembly(frame, scene_rng, missing, clip)
    else:
        cable = draw_cable(scene_rng)
        bare = draw_bare_stretch(defect_rng) if "bare_wire" in names else None
        image = render_harness(frame, scene_rng, cable, bare)
        for name in names:
            if name == "spot":
                channels.append((name, add_spots(frame, defect_rng, image, BRACKET_SPOT_AREA)))
            else:
                channels.append((name, bare_wire_mask(frame, cable, bare)))
    return camera.expose(frame, image), channels
