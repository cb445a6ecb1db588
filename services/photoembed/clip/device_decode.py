"""Decoding JPEGs where the model runs: a batch of encoded photos to the model's input pixels and
their quality statistics, without the pixels ever visiting the CPU.

On CUDA, torchvision decodes the whole batch with nvJPEG; resizing (antialiased, OpenCLIP's
interpolation and sizes), cropping, normalising and the quality score's luminance statistics run
on the GPU too. EXIF orientation is applied here (torchvision does it only on the CPU). Anything the
decoder refuses comes back as that item's exception, and the caller decodes it with Pillow. On a CPU
the same code runs through libjpeg-turbo (the tests compare it with the Pillow path there).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from photoembed.clip.preprocessing import Preprocessing
from photoembed.images import JpegHeader
from photoembed.quality import CLIP_HIGH, CLIP_LOW, WORKING_SIDE, LuminanceStats

# torchvision 0.29 deprecates its image decoders in favour of TorchCodec; the GPU decoder we use
# is still there and still the one on the GPU machines' torchvision.
warnings.filterwarnings(
    "ignore", message=r"The image decoding and encoding capabilities of TorchVision are deprecated"
)

# How many full-size photos are decoded at once: a 12-megapixel photo is 36 MB of pixels.
DECODE_CHUNK = 64


@dataclass(frozen=True)
class EncodedJpeg:
    data: bytes
    header: JpegHeader


def device_decodable(header: JpegHeader) -> bool:
    """What nvJPEG takes: 8-bit greyscale or YCbCr. CMYK/YCCK and 12-bit JPEGs go to Pillow."""
    return header.components in (1, 3) and header.precision == 8


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation (1-8) to a (C, H, W) image, as Pillow's exif_transpose does."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return image.transpose(-2, -1).flip(-1)
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return image.transpose(-2, -1).flip(-2)
    return image


def decode_jpegs(items: list[EncodedJpeg], device: str) -> list[torch.Tensor | BaseException]:
    """Each item to an oriented (3, H, W) uint8 image on `device`, or the exception it raised."""
    encoded = [torch.frombuffer(bytearray(item.data), dtype=torch.uint8) for item in items]
    decoded: list[torch.Tensor | BaseException]
    try:
        decoded = list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        # The batch call returns nothing when one image fails: find out which, one by one.
        decoded = []
        for data in encoded:
            try:
                decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError as exc:
                decoded.append(exc)
    return [
        result if isinstance(result, BaseException) else orient(result, item.header.orientation)
        for item, result in zip(items, decoded, strict=True)
    ]


def _resize(image: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Antialiased resize of a (C, H, W) float image as Pillow does it: the width first, rounded to
    8-bit levels, then the height, rounded again (one pass without the rounding in between moved
    vectors up to 1.5e-4, most of the product's bound)."""
    resized = image[None]
    for step in ((image.shape[-2], size[1]), size):
        if step != tuple(resized.shape[-2:]):
            resized = (
                F.interpolate(resized, size=step, mode=mode, antialias=True, align_corners=False)
                .clamp_(0, 255)
                .round_()
            )
    return resized[0]


def model_pixels(image: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """OpenCLIP's eval transform on a decoded (3, H, W) uint8 image: shorter side to `resize`
    (torchvision's size rule), centre crop, scale to [0, 1], normalise."""
    height, width = image.shape[-2:]
    short, long = min(height, width), max(height, width)
    new_long = int(prep.resize * long / short)
    size = (prep.resize, new_long) if height <= width else (new_long, prep.resize)
    mode = "bicubic" if prep.interpolation == "bicubic" else "bilinear"
    pixels = _resize(image.float(), size, mode) if size != (height, width) else image.float()
    top = round((size[0] - prep.crop) / 2.0)
    left = round((size[1] - prep.crop) / 2.0)
    pixels = pixels[:, top : top + prep.crop, left : left + prep.crop] / 255.0
    mean = torch.tensor(prep.mean, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(prep.std, device=pixels.device).view(3, 1, 1)
    return (pixels - mean) / std


def luminance_stats(image: torch.Tensor) -> LuminanceStats:
    """The quality score's statistics of a decoded (3, H, W) uint8 image, where it lies: the same
    measurements as `quality.luminance_stats`, at the scale the CPU path measures them (a
    whole-factor box reduction, then the working size)."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=image.device).view(3, 1, 1)
    luma = (image.float() * weights).sum(0).round_()
    height, width = luma.shape
    reduce = min(height, width) // WORKING_SIDE
    if reduce >= 2:
        height, width = -(-height // reduce), -(-width // reduce)
        luma = F.interpolate(luma[None, None], size=(height, width), mode="area")[0, 0].round_()
    if max(height, width) > WORKING_SIDE:
        factor = WORKING_SIDE / max(height, width)
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        luma = _resize(luma[None], size, "bilinear")[0]
    luma = luma / 255.0
    laplacian = (
        -4 * luma[1:-1, 1:-1] + luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:]
    )
    values = torch.stack(
        [
            laplacian.var(correction=0) * 255.0**2,
            luma.mean(),
            luma.std(correction=0),
            ((luma <= CLIP_LOW) | (luma >= CLIP_HIGH)).float().mean(),
        ]
    ).tolist()
    return LuminanceStats(
        laplacian_variance=values[0], mean=values[1], std=values[2], clipped_share=values[3]
    )


class DecoderRefused(Exception):
    """The device decoder would not take this JPEG; Pillow decodes it instead."""


# Per item: its model pixels and quality statistics, or why the decoder refused it.
DecodedPhoto = tuple[torch.Tensor | DecoderRefused, LuminanceStats | None]


def decode_for_model(
    items: list[EncodedJpeg], prep: Preprocessing, device: str
) -> list[DecodedPhoto]:
    decoded: list[DecodedPhoto] = []
    for start in range(0, len(items), DECODE_CHUNK):
        for image in decode_jpegs(items[start : start + DECODE_CHUNK], device):
            if isinstance(image, BaseException):
                decoded.append((DecoderRefused(f"{type(image).__name__}: {image}"), None))
            else:
                decoded.append((model_pixels(image, prep), luminance_stats(image)))
    return decoded
