"""Decoding photos: what the API accepts, and how the worker turns a file into RGB pixels."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from PIL import Image, ImageOps, UnidentifiedImageError

ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})

# Our own pixel limit is checked from the header before any decode; Pillow's is lifted so that it
# cannot warn first (a DecompressionBombWarning would be noise) or disagree with ours.
Image.MAX_IMAGE_PIXELS = None


class ImageError(Exception):
    """The file is not an image we can use; the message is shown to the user as is."""


class ImageLimitError(ImageError):
    """A decodable image outside the size limits (pixels, shortest side, aspect ratio)."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return Image.MIME.get(self.format, "application/octet-stream")


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise ImageError("not a recognised image (JPEG, PNG, WebP, GIF, BMP or TIFF)") from None
    except OSError as exc:
        raise ImageError(f"unreadable image: {exc}") from None


MAX_ASPECT_RATIO = 20.0


def _check_header(image: Image.Image, max_pixels: int, min_side: int) -> ImageInfo:
    fmt = image.format or ""
    if fmt not in ACCEPTED_FORMATS:
        raise ImageError(f"unsupported image format {fmt or 'unknown'}")
    width, height = image.size
    if width * height > max_pixels:
        raise ImageLimitError(
            f"image has {width}x{height} pixels, more than the limit of {max_pixels}"
        )
    if min(width, height) < min_side:
        raise ImageLimitError(
            f"image is {width}x{height}; each side must be at least {min_side} pixels"
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        # The model sees a centre square; a 1:100 strip would be mostly lost, and resizing its
        # short side to 224 would blow the long side up to tens of thousands of pixels.
        raise ImageLimitError(
            f"image is {width}x{height}; the longer side may be at most {MAX_ASPECT_RATIO:g} "
            f"times the shorter"
        )
    return ImageInfo(format=fmt, width=width, height=height)


def inspect_image(path: Path, *, max_pixels: int, min_side: int) -> ImageInfo:
    """Validate a file as an image within limits, decoding it (cheaply) to catch truncation."""
    with _open(path) as image:
        info = _check_header(image, max_pixels, min_side)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                image.draft("RGB", (256, 256))
                image.load()
        except (OSError, SyntaxError, ValueError, Warning) as exc:
            raise ImageError(f"corrupt or truncated image: {exc}") from None
    return info


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float greyscale: scale to 8 bits by the image's own range.
        lo, hi = cast(tuple[float, float], image.getextrema())
        scale = 255.0 / (hi - lo) if hi > lo else 1.0
        image = image.point(lambda v: (v - lo) * scale).convert("L")
    if image.mode in ("P", "PA", "LA", "RGBA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(
    path: Path, *, max_pixels: int, min_side: int, draft_side: int = 0
) -> tuple[Image.Image, ImageInfo]:
    """Decode a stored photo to RGB with EXIF orientation applied (first frame of an animation).

    `draft_side` > 0 lets JPEG decode at a reduced scale whose shorter side stays at least that
    large: the cheap path for photos much bigger than the model's input.
    """
    with _open(path) as image:
        info = _check_header(image, max_pixels, min_side)
        try:
            if draft_side and image.format in ("JPEG", "MPO"):
                # draft() keeps both sides at least this large, so the exact resize still follows.
                image.draft("RGB", (draft_side, draft_side))
            image.seek(0)
            oriented = ImageOps.exif_transpose(image)
            rgb = _to_rgb(oriented)
            rgb.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"corrupt or truncated image: {exc}") from None
    return rgb, info
