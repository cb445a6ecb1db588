"""The quality score: how usable a photo is for person search, in [0, 1].

Four measurements, each mapped to [0, 1], combined with fixed weights (docs/faces.md states them):

* sharpness (0.35): variance of the Laplacian of the luminance at a fixed working size (longer side
  at most 512 px), mapped by 1 - exp(-var / 300); a blurred copy loses most of it.
* exposure (0.25): 1 - |mean luminance - 0.5| / 0.5, times the share of pixels not clipped to pure
  black or white; a darkened or blown-out copy scores lower.
* contrast (0.15): standard deviation of the luminance / 0.25, capped at 1.
* resolution (0.25): sqrt(width * height) of the original / 512, capped at 1; a thumbnail scores
  lower than the photo it came from.

The statistics are taken wherever the decoded pixels are (numpy here, torch on a GPU that decoded
the photo: `clip.device_decode`); the mapping to a score is this module's alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

WEIGHTS = {"sharpness": 0.35, "exposure": 0.25, "contrast": 0.15, "resolution": 0.25}
WORKING_SIDE = 512
SHARPNESS_SCALE = 300.0
FULL_RESOLUTION_SIDE = 512.0
CLIP_LOW, CLIP_HIGH = 0.02, 0.98


@dataclass(frozen=True)
class LuminanceStats:
    """Of the luminance in [0, 1] at the working size."""

    laplacian_variance: float  # in 8-bit units squared
    mean: float
    std: float
    clipped_share: float


def luminance_stats(luma: np.ndarray) -> LuminanceStats:
    """`luma`: 2-D float array in [0, 1], already at the working size."""
    luma = luma.astype(np.float32, copy=False)
    laplacian = (
        -4 * luma[1:-1, 1:-1] + luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:]
    )
    return LuminanceStats(
        laplacian_variance=float(laplacian.var(dtype=np.float64) * 255.0**2)
        if laplacian.size
        else 0.0,
        mean=float(luma.mean(dtype=np.float64)),
        std=float(luma.std(dtype=np.float64)),
        clipped_share=float(np.mean((luma <= CLIP_LOW) | (luma >= CLIP_HIGH))),
    )


def components_from_stats(
    stats: LuminanceStats, original_size: tuple[int, int]
) -> dict[str, float]:
    width, height = original_size
    return {
        "sharpness": 1.0 - math.exp(-stats.laplacian_variance / SHARPNESS_SCALE),
        "exposure": max(0.0, 1.0 - abs(stats.mean - 0.5) / 0.5) * (1.0 - stats.clipped_share),
        "contrast": min(1.0, stats.std / 0.25),
        "resolution": min(1.0, math.sqrt(width * height) / FULL_RESOLUTION_SIDE),
    }


def score_from_stats(stats: LuminanceStats, original_size: tuple[int, int]) -> float:
    components = components_from_stats(stats, original_size)
    return round(sum(WEIGHTS[name] * value for name, value in components.items()), 6)


def _luminance(image: Image.Image) -> np.ndarray:
    # A whole-factor box reduction first: the worker hands over photos decoded whole, and turning
    # all 12 megapixels of one into luminance would cost more than the rest of the score.
    factor = min(image.size) // WORKING_SIDE
    grey = (image.reduce(factor) if factor >= 2 else image).convert("L")
    if max(grey.size) > WORKING_SIDE:
        grey.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.float32) / np.float32(255.0)


def quality_components(image: Image.Image, original_size: tuple[int, int]) -> dict[str, float]:
    return components_from_stats(luminance_stats(_luminance(image)), original_size)


def quality_score(image: Image.Image, original_size: tuple[int, int]) -> float:
    return score_from_stats(luminance_stats(_luminance(image)), original_size)
