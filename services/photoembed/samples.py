"""Synthetic person photos, made the same way by the tests, the benchmark and anyone trying the
product without photos of their own."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw


def make_photo(seed: int = 0, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A synthetic 'person photo': a lit background, a head and shoulders, texture and noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    _y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = rng.uniform(60, 200, size=3)
    background = base[None, None, :] * (0.6 + 0.4 * (x / width))[..., None]
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    skin = tuple(int(v) for v in rng.uniform(120, 230, size=3))
    shirt = tuple(int(v) for v in rng.uniform(0, 255, size=3))
    cx = width // 2 + int(rng.integers(-width // 8, width // 8))
    draw.ellipse([cx - width // 3, height * 0.62, cx + width // 3, height * 1.3], fill=shirt)
    draw.ellipse([cx - width // 8, height * 0.18, cx + width // 8, height * 0.6], fill=skin)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        color = tuple(int(v) for v in rng.integers(0, 255, size=3))
        draw.line(
            [x0, y0, x0 + int(rng.integers(-80, 80)), y0 + int(rng.integers(-80, 80))],
            fill=color,
            width=3,
        )
    pixels = np.asarray(image, dtype=np.float64) + rng.normal(0, 6, size=(height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
