"""The quality score ranks a worse copy of a photo below the original."""

from __future__ import annotations

import pytest
from PIL import Image, ImageEnhance, ImageFilter

from photoembed.quality import WEIGHTS, quality_components, quality_score
from tests.helpers import make_photo


def _score(image: Image.Image) -> float:
    return quality_score(image, image.size)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    "degrade",
    [
        pytest.param(lambda im: im.filter(ImageFilter.GaussianBlur(4)), id="blurred"),
        pytest.param(lambda im: ImageEnhance.Brightness(im).enhance(0.25), id="darkened"),
        pytest.param(lambda im: im.resize((im.width // 8, im.height // 8)), id="tiny"),
    ],
)
def test_degraded_copy_scores_below_the_original(seed, degrade):
    original = make_photo(seed, size=(1024, 768))
    assert _score(degrade(original)) < _score(original)


def test_score_is_in_unit_range_and_weights_sum_to_one():
    assert sum(WEIGHTS.values()) == pytest.approx(1.0)
    for image in (Image.new("RGB", (64, 64)), Image.new("RGB", (64, 64), "white"), make_photo(4)):
        assert 0.0 <= _score(image) <= 1.0
        assert all(0.0 <= v <= 1.0 for v in quality_components(image, image.size).values())


def test_resolution_uses_the_original_size_not_the_decoded_one():
    small_decode = make_photo(5, size=(256, 192))
    assert quality_components(small_decode, (4000, 3000))["resolution"] == 1.0
    assert quality_components(small_decode, (256, 192))["resolution"] < 1.0
