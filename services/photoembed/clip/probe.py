"""The fixed probe image and the tolerances that the boot self-check and the ONNX export's parity
check both measure against."""

from __future__ import annotations

import numpy as np
from PIL import Image

NORM_TOLERANCE = 1e-3
# Recomputing the same weights differs by ~1e-7; GELU vs QuickGELU on the same weights by ~1e-3.
REFERENCE_TOLERANCE = 1e-4
# A reduced precision (CLIP_PRECISION on a GPU) may move the probe at most half the GELU/QuickGELU
# difference, or the activation could no longer be told from the arithmetic: measured on random
# weights, fp16 moves it ~2e-4 (allowed), bf16 ~1.8e-3 (refused).
PRECISION_TOLERANCE = 5e-4


def max_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    """How far two embeddings (or pixel arrays) are apart; infinite when their shapes differ."""
    return float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf")


def probe_image() -> Image.Image:
    """A fixed, deterministic 256x256 image with structure at several scales."""
    y, x = np.mgrid[0:256, 0:256].astype(np.float64) / 255.0
    red = 0.5 + 0.5 * np.sin(12 * x + 3 * y)
    green = 0.5 + 0.5 * np.cos(7 * y * x * 4)
    blue = (x + y) / 2
    pixels = np.stack([red, green, blue], axis=-1)
    return Image.fromarray((pixels * 255).round().astype(np.uint8), mode="RGB")
