"""The batched decode path (what a GPU runs: torchvision's decoder, orientation, resize, crop,
normalise and the quality statistics as tensors) against the Pillow path, on this CPU.

The batched path is held to the product's bound against the exact Pillow path (full decode,
OpenCLIP's resize): measured here on random weights, 3e-6 to 6e-6 (max abs) since its resize rounds
between its two passes as Pillow's does (1.5e-4 without that rounding).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from photoembed.clip import device_decode
from photoembed.clip.preprocessing import preprocessing_of
from photoembed.clip.runtimes.torch_runtime import ClipEmbedder
from photoembed.images import DecodeLimits, load_rgb, read_jpeg_header
from photoembed.quality import luminance_stats, quality_score, score_from_stats
from tests.helpers import encode, make_photo

DECODE_TOLERANCE = 2e-4  # max abs, unit vectors: the product's bound
LIMITS = DecodeLimits(max_pixels=10**8, min_side=16)
ASYMMETRIC = make_photo(21, (320, 200))


def _jpeg_with_orientation(orientation: int, **options: object) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(ASYMMETRIC, exif=exif, **options)


def _decoded(data: bytes) -> torch.Tensor:
    header = read_jpeg_header(data)
    assert header is not None
    (image,) = device_decode.decode_jpegs([device_decode.EncodedJpeg(data, header)], "cpu")
    assert isinstance(image, torch.Tensor)
    return image


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillows(orientation):
    data = _jpeg_with_orientation(orientation)
    with Image.open(__import__("io").BytesIO(data)) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.int16)
    actual = _decoded(data).permute(1, 2, 0).numpy().astype(np.int16)
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).mean() < 1.0  # the same libjpeg-turbo, maybe other IDCT


@pytest.fixture(scope="module")
def embedder(tmp_path_factory, model_cache):
    from photoembed.config import Settings

    settings = Settings(
        env="dev",
        clip_cache_dir=model_cache,
        clip_device="cpu",
        jpeg_decoder="torchvision",
        embed_batch_size=8,
        embed_batch_wait_ms=1,
    )
    loaded = ClipEmbedder(settings, image_only=True)
    loaded.load()
    return loaded


CASES = {
    "baseline": encode(make_photo(22, (1600, 1200)), quality=90),
    "12mp": encode(make_photo(23, (4000, 3000)), quality=90),
    "progressive": encode(make_photo(24, (1200, 900)), quality=90, progressive=True),
    "greyscale": encode(make_photo(25, (900, 1200)).convert("L"), quality=90),
    "rotated-6": _jpeg_with_orientation(6, quality=95),
    "rotated-8": _jpeg_with_orientation(8, quality=95),
    "cmyk": encode(make_photo(26, (800, 600)).convert("CMYK"), quality=90),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_batched_path_stays_within_the_bound_of_the_exact_pillow_path(embedder, name):
    data = CASES[name]
    exact, exact_info = load_rgb(data, LIMITS)
    via_pillow = embedder.embed_images([exact])[0]

    embedded = embedder.embed_photo(data, LIMITS)

    header = read_jpeg_header(data)
    assert header is not None
    assert device_decode.device_decodable(header) is (name != "cmyk")  # CMYK goes to Pillow
    assert embedded.decode_mode == ("exact" if name == "cmyk" else "device-jpeg")
    gap = float(np.abs(embedded.vector - via_pillow).max())
    print(f"{name}: batched vs exact {gap:.2e}")
    assert gap <= DECODE_TOLERANCE
    assert embedded.info == exact_info
    assert (
        abs(embedded.quality - quality_score(exact, (exact_info.width, exact_info.height))) < 0.03
    )


def test_quality_statistics_on_tensors_are_the_numpy_ones(embedder):
    # given the same luminance at the working size in numpy and as a tensor
    image = make_photo(27, (512, 384))
    rgb = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()
    numpy_stats = luminance_stats(np.asarray(image.convert("L"), dtype=np.float32) / 255.0)
    tensor_stats = device_decode.luminance_stats(rgb)
    # then the statistics agree (Pillow's integer luminance rounds within one level)
    assert tensor_stats.mean == pytest.approx(numpy_stats.mean, abs=2e-3)
    assert tensor_stats.std == pytest.approx(numpy_stats.std, abs=2e-3)
    assert tensor_stats.laplacian_variance == pytest.approx(
        numpy_stats.laplacian_variance, rel=0.02
    )
    assert score_from_stats(tensor_stats, (4000, 3000)) == pytest.approx(
        score_from_stats(numpy_stats, (4000, 3000)), abs=5e-3
    )


def test_model_pixels_match_openclips_transform_on_the_same_decoded_image(embedder):
    prep = preprocessing_of(embedder.load().preprocess)
    image = make_photo(28, (640, 480))
    expected = embedder.preprocess(image)
    tensor = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).contiguous()
    actual = device_decode.model_pixels(tensor, prep).numpy()
    # the same two passes, each rounded to 8-bit levels: a level apart in a few pixels at most
    std = np.asarray(prep.std, dtype=np.float32).reshape(3, 1, 1)
    levels = np.abs(actual - expected) * std * 255
    assert actual.shape == expected.shape
    assert levels.max() < 1.01 and (levels > 0.5).mean() < 0.01
