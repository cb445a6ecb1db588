"""The quality score: how usable a photo is for person search, in [0, 1].

Four measurements, each mapped to [0, 1], combined with fixed weights (the README states them):

* sharpness (0.35): variance of the Laplacian of the luminance at a fixed working size (longer side
  512 px), mapped by 1 - exp(-var / 300); a blurred copy loses most of it.
* exposure (0.25): 1 - |mean luminance - 0.5| / 0.5, times the share of pixels not clipped to pure
  black or white; a darkened or blown-out copy scores lower.
* contrast (0.15): standard deviation of the luminance / 0.25, capped at 1.
* resolution (0.25): sqrt(width * height) of the original / 512, capped at 1; a thumbnail scores
  lower than the photo it came from.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

WEIGHTS = {"sharpness": 0.35, "exposure": 0.25, "contrast": 0.15, "resolution": 0.25}
WORKING_SIDE = 512
SHARPNESS_SCALE = 300.0
FULL_RESOLUTION_SIDE = 512.0


def _luminance(image: Image.Image) -> np.ndarray:
    grey = image.convert("L")
    if max(grey.size) > WORKING_SIDE:
        grey.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.float64) / 255.0


def quality_components(image: Image.Image, original_size: tuple[int, int]) -> dict[str, float]:
    luma = _luminance(image)
    laplacian = (
        -4 * luma[1:-1, 1:-1] + luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:]
    )
    variance = float(laplacian.var() * 255.0**2) if laplacian.size else 0.0
    clipped = float(np.mean((luma <= 0.02) | (luma >= 0.98)))
    width, height = original_size
    return {
        "sharpness": 1.0 - float(np.exp(-variance / SHARPNESS_SCALE)),
        "exposure": max(0.0, 1.0 - abs(float(luma.mean()) - 0.5) / 0.5) * (1.0 - clipped),
        "contrast": min(1.0, float(luma.std()) / 0.25),
        "resolution": min(1.0, float(np.sqrt(width * height)) / FULL_RESOLUTION_SIDE),
    }


def quality_score(image: Image.Image, original_size: tuple[int, int]) -> float:
    components = quality_components(image, original_size)
    return round(sum(WEIGHTS[name] * value for name, value in components.items()), 6)
