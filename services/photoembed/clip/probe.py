"""The fixed probe images and the tolerances that the boot self-check and the ONNX export's parity
check both measure against."""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image

from photoembed.samples import encode

NORM_TOLERANCE = 1e-3
# Recomputing the same weights differs by ~1e-7; GELU vs QuickGELU on the same weights by ~1e-3.
REFERENCE_TOLERANCE = 1e-4
# A reduced precision (CLIP_PRECISION on a GPU) may move the probe at most half the GELU/QuickGELU
# difference, or the activation could no longer be told from the arithmetic: measured on random
# weights, fp16 moves it ~2e-4 (allowed), bf16 ~1.8e-3 (refused).
PRECISION_TOLERANCE = 5e-4
# The product's bound: a served vector may be at most this far (max abs) from the one the exact
# decode of the same file gives, a fifth of the GELU/QuickGELU distance.
DECODE_TOLERANCE = 2e-4


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


def decode_probe_photo(size: tuple[int, int]) -> Image.Image:
    """A deterministic photo with detail at every scale (patches, sharp edges, a fine grating,
    sensor noise): what a reduced decode gets wrong shows here at least as much as in real photos."""
    width, height = size
    rng = np.random.default_rng(20261130)
    patches = rng.integers(0, 256, size=(height // 64 + 1, width // 64 + 1, 3), dtype=np.uint8)
    pixels = np.asarray(Image.fromarray(patches).resize(size, Image.Resampling.NEAREST), np.int16)
    x = np.arange(width, dtype=np.float32)
    grating = (24 * np.sin(0.9 * x)).astype(np.int16)[None, :, None]
    noise = rng.integers(-12, 13, size=(height, width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(pixels + grating + noise, 0, 255).astype(np.uint8), "RGB")


@functools.lru_cache(maxsize=2)
def decode_probes(draft_side: int, max_pixels: int) -> dict[str, bytes]:
    """Encoded photos for the self-check's decode probe, the same bytes every time: a phone JPEG
    large enough for a reduced decode to act on (12 megapixels, or larger when DECODE_DRAFT_SIDE
    asks for more, never past MAX_IMAGE_PIXELS), and a 3-megapixel PNG, which must decode whole."""
    short = min(max(3024, 2 * draft_side), math.isqrt(max_pixels * 3 // 4))
    jpeg = decode_probe_photo((short * 4 // 3, short))
    png = decode_probe_photo((2000, 1500))
    return {
        f"jpeg-{jpeg.width}x{jpeg.height}": encode(jpeg, "JPEG", quality=90),
        "png-2000x1500": encode(png, "PNG", compress_level=1),
    }
