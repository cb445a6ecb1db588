"""Decoding and storage, module by module."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from photoembed.images import DecodeLimits, ImageError, inspect_image, load_rgb, read_jpeg_header
from photoembed.storage import LocalStorage, PhotoBytesMissing, TooLargeError
from tests.helpers import encode, make_photo

LIMITS = DecodeLimits(max_pixels=50_000_000, min_side=16)


def test_exif_orientation_is_applied(tmp_path):
    photo = make_photo(1, size=(400, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rgb, info = load_rgb(encode(photo, exif=exif), LIMITS)
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
    rgb, _ = load_rgb(encode(image, fmt), LIMITS)
    assert rgb.mode == "RGB"
    assert np.asarray(rgb).std() > 0


def test_transparent_palette_is_flattened_on_white(tmp_path):
    image = Image.new("RGBA", (32, 32), (255, 0, 0, 0)).convert("P")
    rgb, _ = load_rgb(encode(image, "PNG"), LIMITS)
    assert rgb.getpixel((5, 5)) == (255, 255, 255)


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (40, 40), color) for color in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    rgb, _ = load_rgb(buffer.getvalue(), LIMITS)
    red, _green, blue = rgb.getpixel((10, 10))
    assert red > 200 and blue < 50


def test_by_default_a_photo_decodes_whole_to_exactly_pillows_pixels():
    # given a 12-megapixel JPEG, held sideways
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(make_photo(4, size=(4000, 3000)), exif=exif, quality=90)
    # when it is decoded with the worker's default limits
    rgb, info = load_rgb(data, DecodeLimits(50_000_000, 16))
    # then every pixel is Pillow's full decode, upright
    with Image.open(io.BytesIO(data)) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    assert (info.width, info.height) == (4000, 3000)
    assert np.array_equal(np.asarray(rgb), expected)


@pytest.mark.parametrize("side", [896, 448])
def test_a_draft_side_reduces_only_jpegs_and_keeps_at_least_that_side(side):
    jpeg, _ = load_rgb(encode(make_photo(4, size=(4000, 3000))), DecodeLimits(50_000_000, 16, side))
    assert side <= min(jpeg.size) < 2 * side
    for fmt in ("PNG", "WEBP", "TIFF"):
        data = encode(make_photo(4, size=(2000, 1800)), fmt)
        other, _ = load_rgb(data, DecodeLimits(50_000_000, 16, side))
        assert other.size == (2000, 1800), fmt  # a box reduction moved vectors up to 7e-3


def test_sixteen_bit_levels_are_scaled_to_eight_bits_not_clipped():
    # given a 16-bit greyscale PNG that does not span the whole range
    levels = (
        np.array([[2570, 5140, 25700, 51400, 51528]], dtype=np.uint16).repeat(16, 0).repeat(4, 1)
    )
    rgb, _ = load_rgb(encode(Image.fromarray(levels), "PNG"), LIMITS)
    # then each level keeps its brightness (Pillow alone clips them all to 255)
    assert np.asarray(rgb)[0, ::4, 0].tolist() == [10, 20, 100, 200, 200]


def test_pixel_limit_is_checked_from_the_header():
    data = encode(Image.new("RGB", (3000, 20)), "PNG")
    with pytest.raises(ImageError, match="3000x20 pixels"):
        inspect_image(data, DecodeLimits(max_pixels=50_000, min_side=16))


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("jpeg", encode(make_photo(5, (640, 480)))),
        ("progressive jpeg", encode(make_photo(5, (640, 480)), progressive=True)),
        ("png", encode(make_photo(5, (320, 240)), "PNG")),
    ],
)
def test_validation_checks_completeness_from_the_structure(name, data):
    inspect_image(data, LIMITS)
    for cut in (len(data) - 2, len(data) // 2, len(data) // 5):
        with pytest.raises(ImageError, match="truncated"):
            inspect_image(data[:cut], LIMITS)


def test_a_damaged_png_chunk_is_caught_by_its_checksum():
    data = bytearray(encode(make_photo(6, (320, 240)), "PNG"))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(ImageError, match="damaged"):
        inspect_image(bytes(data), LIMITS)


def test_jpeg_header_gives_size_components_and_orientation_without_decoding():
    exif = Image.Exif()
    exif[0x0112] = 6
    header = read_jpeg_header(encode(make_photo(7, (400, 300)), exif=exif, progressive=True))
    assert header is not None
    assert (header.width, header.height, header.components) == (400, 300, 3)
    assert header.progressive and header.orientation == 6 and header.complete
    grey = read_jpeg_header(encode(make_photo(7, (40, 30)).convert("L")))
    cmyk = read_jpeg_header(encode(make_photo(7, (40, 30)).convert("CMYK")))
    assert grey is not None and grey.components == 1 and grey.orientation == 1
    assert cmyk is not None and cmyk.components == 4
    assert read_jpeg_header(b"not a jpeg") is None


def _stage(storage: LocalStorage, data: bytes, max_bytes: int, chunk: int = 1000):
    writer = storage.staging(max_bytes)
    for start in range(0, len(data), chunk):
        writer.write(data[start : start + chunk])
    return writer.finish()


def test_storage_is_content_addressed_and_refuses_other_keys(tmp_path):
    storage = LocalStorage(tmp_path)
    key = storage.commit(_stage(storage, b"x" * 5000, max_bytes=10_000))
    assert storage.read(key) == b"x" * 5000
    assert storage.path_for(key).is_relative_to(tmp_path.resolve())
    for bad in ("../../etc/passwd", "/etc/passwd", key.upper(), key[:-1] + "/"):
        with pytest.raises(ValueError, match="not a storage key"):
            storage.path_for(bad)


def test_storage_stops_at_the_limit_and_leaves_nothing(tmp_path):
    storage = LocalStorage(tmp_path)
    with pytest.raises(TooLargeError):
        _stage(storage, b"y" * 50_000, max_bytes=10_000)
    assert list((tmp_path / ".staging").iterdir()) == []


def test_missing_bytes_name_the_storage_setting(tmp_path):
    storage = LocalStorage(tmp_path)
    with pytest.raises(PhotoBytesMissing, match="STORAGE_URL=file://"):
        storage.read("0" * 64)


def test_the_self_checks_decode_probe_stays_within_the_pixel_limit_whatever_the_draft_side():
    from photoembed.clip.probe import decode_probes
    from photoembed.images import check_size

    limits = DecodeLimits(max_pixels=20_000_000, min_side=16, draft_side=5000)
    for data in decode_probes(limits.draft_side, limits.max_pixels).values():
        header = read_jpeg_header(data)
        if header is not None:  # a 10000-pixel shorter side would have been refused as too big
            check_size("JPEG", header.width, header.height, limits)
