"""Decoding and storage, module by module."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photoembed.images import ImageError, inspect_image, load_rgb
from photoembed.storage import PhotoStorage, TooLargeError
from tests.helpers import encode, make_photo

LIMITS = {"max_pixels": 50_000_000, "min_side": 16}


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_exif_orientation_is_applied(tmp_path):
    photo = make_photo(1, size=(400, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = _write(tmp_path, "rotated.jpg", encode(photo, exif=exif))
    rgb, info = load_rgb(path, **LIMITS)
    assert (info.width, info.height) == (400, 200)
    assert rgb.size == (200, 400)


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(make_photo(2).convert("CMYK"), id="cmyk"),
        pytest.param(make_photo(3).convert("P"), id="palette"),
        pytest.param(
            Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)),
            id="16-bit",
        ),
    ],
)
def test_unusual_modes_decode_to_rgb(tmp_path, image):
    fmt = "JPEG" if image.mode == "CMYK" else ("TIFF" if image.mode.startswith("I") else "PNG")
    path = _write(tmp_path, "odd", encode(image, fmt))
    rgb, _ = load_rgb(path, **LIMITS)
    assert rgb.mode == "RGB"
    assert np.asarray(rgb).std() > 0


def test_transparent_palette_is_flattened_on_white(tmp_path):
    image = Image.new("RGBA", (32, 32), (255, 0, 0, 0)).convert("P")
    path = _write(tmp_path, "clear.png", encode(image, "PNG"))
    rgb, _ = load_rgb(path, **LIMITS)
    assert rgb.getpixel((5, 5)) == (255, 255, 255)


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (40, 40), color) for color in ("red", "blue")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    rgb, _ = load_rgb(path, **LIMITS)
    red, _green, blue = rgb.getpixel((10, 10))
    assert red > 200 and blue < 50


def test_draft_decode_keeps_at_least_the_asked_side(tmp_path):
    path = _write(tmp_path, "big.jpg", encode(make_photo(4, size=(4000, 3000))))
    rgb, info = load_rgb(path, **LIMITS, draft_side=448)
    assert (info.width, info.height) == (4000, 3000)
    assert 448 <= min(rgb.size) < 3000


def test_pixel_limit_is_checked_from_the_header(tmp_path):
    path = _write(tmp_path, "wide.png", encode(Image.new("RGB", (3000, 20)), "PNG"))
    with pytest.raises(ImageError, match="3000x20 pixels"):
        inspect_image(path, max_pixels=50_000, min_side=16)


async def _chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_storage_is_content_addressed_and_refuses_other_keys(tmp_path):
    storage = PhotoStorage(tmp_path)
    staged = asyncio.run(storage.stage(_chunks(b"x" * 5000), max_bytes=10_000))
    key = storage.commit(staged)
    assert storage.read_path(key).read_bytes() == b"x" * 5000
    assert storage.read_path(key).is_relative_to(tmp_path.resolve())
    for bad in ("../../etc/passwd", "/etc/passwd", key.upper(), key[:-1] + "/"):
        with pytest.raises(ValueError, match="not a storage key"):
            storage.path_for(bad)


def test_storage_stops_at_the_limit_and_leaves_nothing(tmp_path):
    storage = PhotoStorage(tmp_path)
    with pytest.raises(TooLargeError):
        asyncio.run(storage.stage(_chunks(b"y" * 50_000), max_bytes=10_000))
    assert list((tmp_path / ".staging").iterdir()) == []
