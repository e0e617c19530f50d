"""Anomaly synthesis shared by the self-supervised detectors (DRAEM, DSR, ...): Perlin masks,
anomaly sources (texture folder, procedural textures, training crops), DRAEM's source augmentation
and blend. numpy only; torch is not imported."""

from .perlin import perlin_mask, perlin_masks, perlin_noise, random_perlin_noise
from .sources import (
    SOURCE_KINDS,
    AnomalySource,
    MixedSource,
    ProceduralTextureSource,
    SolidColourSource,
    TextureFolderSource,
    TrainingCropSource,
    augment_source,
    blend_anomaly,
    make_source,
    resize_float,
    synthesize_anomaly,
)

__all__ = [
    "SOURCE_KINDS",
    "AnomalySource",
    "MixedSource",
    "ProceduralTextureSource",
    "SolidColourSource",
    "TextureFolderSource",
    "TrainingCropSource",
    "augment_source",
    "blend_anomaly",
    "make_source",
    "perlin_mask",
    "perlin_masks",
    "perlin_noise",
    "random_perlin_noise",
    "resize_float",
    "synthesize_anomaly",
]
