"""Decoding photos: what the API accepts, and how the worker turns stored bytes into RGB pixels.

The API validates without decoding what it can check from the bytes alone: the header (format,
size, limits) and, for JPEG, PNG, HEIC and AVIF, that the file is complete (a JPEG's end-of-image
marker after its scan, a PNG's chunks up to IEND with their checksums, HEIF boxes end to end).

The worker decodes every pixel of every photo, so that its vector is the reference pipeline's
(docs/models.md, "Decoding"). Only where DECODE_DRAFT_SIDE asks may a JPEG decode at a reduced DCT scale
(`DecodeLimits.draft_side`), and the worker's self-check refuses a value that moves its probe photo
out of the product's bound. Nothing is ever box-reduced before OpenCLIP's own resize: that moved
vectors several times the QuickGELU bug's distance and saved no time.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import cast

import numpy as np
from PIL import Image, UnidentifiedImageError
from pillow_heif import register_heif_opener

# iPhones save HEIC by default (pillow-heif, libheif); AVIF is Pillow's own (12+).
register_heif_opener()

ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF"})
ACCEPTED_NAMES = "JPEG, HEIC, AVIF, PNG, WebP, GIF, BMP or TIFF"

# Our own pixel limit is checked from the header before any decode; Pillow's is lifted so that it
# cannot warn first (a DecompressionBombWarning would be noise) or disagree with ours.
Image.MAX_IMAGE_PIXELS = None

MAX_ASPECT_RATIO = 20.0


class ImageError(Exception):
    """The file is not an image we can use; the message is shown to the user as is."""


class ImageLimitError(ImageError):
    """A decodable image outside the size limits (pixels, shortest side, aspect ratio)."""


# Bump when a change to decoding or preprocessing can move a stored vector: every vector records
# the version that made it, and `photoembed backfill` refreshes those of older versions.
# 1: JPEG draft to a shorter side of 224 and a box reduce of other formats (up to 7e-3 off).
# 2: every photo decoded whole (a JPEG drafted only where DECODE_DRAFT_SIDE asks for it).
DECODE_VERSION = 2
# The decode mode of a JPEG decoded where the model runs (clip.device_decode): whole, then resized
# as Pillow resizes.
DEVICE_DECODE_MODE = "device-jpeg"


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int
    min_side: int
    # > 0: a JPEG decodes at a reduced DCT scale whose shorter side stays at least this large.
    draft_side: int = 0

    @property
    def decode_mode(self) -> str:
        """What a vector records about the decode that made it (beside DECODE_VERSION)."""
        return f"jpeg-draft-{self.draft_side}" if self.draft_side else "exact"


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return Image.MIME.get(self.format, "application/octet-stream")


@dataclass(frozen=True)
class JpegHeader:
    """What the markers before a JPEG's first scan say, read without decoding anything."""

    width: int
    height: int
    components: int
    progressive: bool
    precision: int
    orientation: int
    complete: bool


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def _exif_orientation(payload: bytes) -> int:
    """The Orientation tag (0x0112) of IFD0 in an APP1 Exif payload; 1 when absent or unreadable."""
    tiff = payload[6:]
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    for index in range(count):
        entry = ifd + 2 + 12 * index
        if entry + 12 > len(tiff):
            break
        tag, kind = struct.unpack_from(order + "HH", tiff, entry)
        if tag == 0x0112 and kind == 3:
            (value,) = struct.unpack_from(order + "H", tiff, entry + 8)
            return value if 1 <= value <= 8 else 1
    return 1


def read_jpeg_header(data: bytes) -> JpegHeader | None:
    """Walk the markers up to the first scan (SOS); None for anything that is not such a JPEG."""
    if data[:2] != b"\xff\xd8":
        return None
    position, frame, orientation = 2, None, 1
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        (length,) = struct.unpack_from(">H", data, position + 2)
        segment = data[position + 4 : position + 2 + length]
        if marker == 0xE1 and segment.startswith(b"Exif\0\0") and orientation == 1:
            orientation = _exif_orientation(segment)
        elif marker in _SOF_MARKERS and len(segment) >= 6:
            precision, height, width, components = struct.unpack_from(">BHHB", segment)
            frame = (width, height, components, marker in _PROGRESSIVE, precision)
        elif marker == 0xDA:
            if frame is None:
                return None
            width, height, components, progressive, precision = frame
            return JpegHeader(
                width=width,
                height=height,
                components=components,
                progressive=progressive,
                precision=precision,
                orientation=orientation,
                # Inside entropy-coded data 0xFF is always stuffed or a restart marker, so an
                # end-of-image marker after the first scan is the end of this image.
                complete=data.rfind(b"\xff\xd9") > position,
            )
        position += 2 + length
    return None


def _png_is_complete(data: bytes) -> bool:
    """Every chunk is whole with a correct CRC, up to IEND (no decompression)."""
    position = 8
    while position + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, position)
        end = position + 12 + length
        if end > len(data):
            return False
        kind_and_data = data[position + 4 : position + 8 + length]
        (crc,) = struct.unpack_from(">I", data, position + 8 + length)
        if zlib.crc32(kind_and_data) != crc:
            return False
        if kind_and_data[:4] == b"IEND":
            return True
        position = end
    return False


def _isobmff_is_complete(data: bytes) -> bool:
    """HEIF and AVIF files are ISO media boxes end to end: a cut file leaves the last box short."""
    position = 0
    while position + 8 <= len(data):
        (size,) = struct.unpack_from(">I", data, position)
        if size == 1:
            if position + 16 > len(data):
                return False
            (size,) = struct.unpack_from(">Q", data, position + 8)
        elif size == 0:  # the last box runs to the end of the file
            return True
        if size < 8:
            return False
        position += size
    return position == len(data)


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        if data[4:8] == b"ftyp" and not _isobmff_is_complete(data):  # libheif reads it whole
            raise ImageError(
                "corrupt or truncated image: the HEIF/AVIF file is cut short"
            ) from None
        raise ImageError(f"not a recognised image ({ACCEPTED_NAMES})") from None
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        raise ImageError(f"unreadable image: {exc}") from None


def check_size(fmt: str, width: int, height: int, limits: DecodeLimits) -> ImageInfo:
    """The format and size limits, from the header alone."""
    if fmt not in ACCEPTED_FORMATS:
        raise ImageError(f"unsupported image format {fmt or 'unknown'}")
    if width * height > limits.max_pixels:
        raise ImageLimitError(
            f"image has {width}x{height} pixels, more than the limit of {limits.max_pixels}"
        )
    if min(width, height) < limits.min_side:
        raise ImageLimitError(
            f"image is {width}x{height}; each side must be at least {limits.min_side} pixels"
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        # The model sees a centre square; a 1:100 strip would be mostly lost, and resizing its
        # short side to 224 would blow the long side up to tens of thousands of pixels.
        raise ImageLimitError(
            f"image is {width}x{height}; the longer side may be at most {MAX_ASPECT_RATIO:g} "
            f"times the shorter"
        )
    return ImageInfo(format=fmt, width=width, height=height)


def _check_header(image: Image.Image, limits: DecodeLimits) -> ImageInfo:
    return check_size(image.format or "", image.size[0], image.size[1], limits)


def inspect_image(data: bytes, limits: DecodeLimits) -> ImageInfo:
    """Validate bytes as an image within limits. JPEG and PNG are checked for completeness from
    their structure alone; other formats are decoded at a small size to catch truncation."""
    with _open(data) as image:
        info = _check_header(image, limits)
        if info.format in ("JPEG", "MPO"):
            header = read_jpeg_header(data)
            if header is None or not header.complete:
                raise ImageError("corrupt or truncated image: the JPEG ends before its last scan")
            return info
        if info.format == "PNG":
            if not _png_is_complete(data):
                raise ImageError("corrupt or truncated image: a PNG chunk is cut short or damaged")
            return info
        if info.format in ("HEIF", "AVIF"):
            if not _isobmff_is_complete(data):
                raise ImageError(f"corrupt or truncated image: the {info.format} file is cut short")
            return info
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                image.draft("RGB", (256, 256))
                image.load()
        except (OSError, SyntaxError, ValueError, Warning) as exc:
            raise ImageError(f"corrupt or truncated image: {exc}") from None
    return info


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any decoded mode to 8-bit RGB as a viewer shows it: 16-bit levels scaled by 255/65535 (not
    clipped, as Pillow's own conversion does), transparency over white."""
    if image.mode.startswith("I;16"):
        levels = np.asarray(image).astype(np.uint32)
        image = Image.fromarray(((levels * 255 + 32767) // 65535).astype(np.uint8), "L")
    elif image.mode in ("I", "F"):
        # 32-bit integer or float greyscale has no white point: scale by the image's own range.
        lo, hi = cast(tuple[float, float], image.getextrema())
        scale = 255.0 / (hi - lo) if hi > lo else 1.0
        image = image.point(lambda v: (v - lo) * scale).convert("L")
    if image.mode in ("P", "PA", "LA", "RGBA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


# Pillow's exif_transpose, as one transpose of the already reduced image.
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def load_rgb(data: bytes, limits: DecodeLimits) -> tuple[Image.Image, ImageInfo]:
    """Decode stored bytes to RGB with EXIF orientation applied (first frame of an animation).

    With `limits.draft_side`, a JPEG decodes at the largest DCT scale (1/2, 1/4, 1/8) that keeps
    its shorter side at least that large; every other image, and a JPEG too small to scale,
    decodes whole.
    """
    image = _open(data)  # from memory: nothing to close but the image itself
    info = _check_header(image, limits)
    try:
        if limits.draft_side and image.format in ("JPEG", "MPO"):
            image.draft(image.mode, (limits.draft_side, limits.draft_side))
        image.seek(0)
        image.load()
        orientation = image.getexif().get(0x0112, 1)
        rgb = _to_rgb(image)
        if orientation in _ORIENTATION:
            rgb = rgb.transpose(_ORIENTATION[orientation])
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt or truncated image: {exc}") from None
    return rgb, info
