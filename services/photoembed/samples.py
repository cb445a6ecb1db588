"""Synthetic person photos, made the same way by the tests, the benchmark and anyone trying the
product without photos of their own."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
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


@dataclass(frozen=True)
class Library:
    """What `library_tree` wrote: how many files of each kind, and the folders that name people."""

    photos: int  # distinct good photos
    duplicates: int  # extra copies of some of them, elsewhere in the tree
    corrupt: int  # photo names whose bytes are no image
    not_photos: int  # sidecars, videos, .DS_Store, AppleDouble files
    too_large: int  # good photos over `too_large_bytes`
    people: tuple[str, ...]

    @property
    def files(self) -> int:
        return self.photos + self.duplicates + self.corrupt + self.not_photos + self.too_large


def library_tree(
    root: Path,
    photos: int,
    *,
    people: tuple[str, ...] = ("Ada", "Brian", "Chiara", "Dmitri", "Eun-ji"),
    duplicates: int = 0,
    corrupt: int = 0,
    not_photos: int = 0,
    too_large_bytes: int = 0,
    side: int = 48,
    seed: int = 7,
) -> Library:
    """A person-photo archive as people keep them: a folder per person, years below, small
    distinct JPEGs and PNGs, and the clutter real folders hold. Deterministic."""
    rng = np.random.default_rng(seed)
    written: list[Path] = []
    for index in range(photos):
        person = people[index % len(people)]
        folder = root / person / str(2015 + index % 7)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
        fmt, suffix = ("PNG", "png") if index % 10 == 0 else ("JPEG", "jpg")
        path = folder / f"IMG_{index:05d}.{suffix}"
        path.write_bytes(encode(Image.fromarray(pixels), fmt))
        written.append(path)
    for index in range(duplicates):
        source = written[(index * 7) % len(written)]
        copy = root / "backup" / f"copy_{index:04d}{source.suffix}"
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(source.read_bytes())
    for index in range(corrupt):
        broken = root / people[0] / "broken" / f"broken_{index:03d}.jpg"
        broken.parent.mkdir(parents=True, exist_ok=True)
        good = written[index % len(written)].read_bytes()
        junk = f"not a photo at all ({index})".encode()
        broken.write_bytes(good[: len(good) // 3] if index % 2 else junk)
    clutter = [".DS_Store", "notes.txt", "clip.mp4", "IMG_0001.xmp", "._IMG_0001.jpg"]
    for index in range(not_photos):
        name = clutter[index % len(clutter)]
        target = root / people[index % len(people)] / f"extra{index:03d}" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"\0" * 64)
    too_large = 0
    if too_large_bytes:
        side_px = int((too_large_bytes / 2) ** 0.5) + 64  # noise PNGs take ~3 bytes a pixel
        noise = rng.integers(0, 256, size=(side_px, side_px, 3), dtype=np.uint8)
        big = root / people[-1] / "huge.png"
        big.write_bytes(encode(Image.fromarray(noise), "PNG"))
        assert big.stat().st_size > too_large_bytes
        too_large = 1
    return Library(photos, duplicates, corrupt, not_photos, too_large, people)
