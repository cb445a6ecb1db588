"""OpenCLIP's eval transform described as plain numbers (resize of the shorter side, centre crop,
normalisation), read from the torchvision transform once, so that runtimes without torchvision (ONNX
Runtime in numpy) and devices that decode photos themselves (a GPU) give OpenCLIP's pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from photoembed.clip.errors import ModelLoadError

_RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class Preprocessing:
    """OpenCLIP's eval transform (Resize of the shorter side, CenterCrop, to float, Normalize) in
    Pillow and numpy, with torchvision's size and rounding rules, so it gives the same pixels."""

    resize: int
    interpolation: str
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: Image.Image) -> np.ndarray:
        if image.mode != "RGB":
            image = image.convert("RGB")
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize, int(self.resize * long / short)
        size = (new_short, new_long) if width <= height else (new_long, new_short)
        if size != image.size:
            image = image.resize(size, _RESAMPLING[self.interpolation])
        width, height = image.size
        top = round((height - self.crop) / 2.0)  # torchvision's rounding, half to even
        left = round((width - self.crop) / 2.0)
        image = image.crop((left, top, left + self.crop, top + self.crop))
        scaled = np.asarray(image, dtype=np.float32) / np.float32(255.0)
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        return np.ascontiguousarray(((scaled - mean) / std).transpose(2, 0, 1))


def preprocessing_of(transform: Any) -> Preprocessing:
    """Read OpenCLIP's eval transform; anything but Resize, CenterCrop, to-tensor and Normalize
    (for example a resize mode that pads) is refused rather than approximated."""
    from torchvision import transforms

    steps = list(getattr(transform, "transforms", []))
    resize = next((s for s in steps if isinstance(s, transforms.Resize)), None)
    crop = next((s for s in steps if isinstance(s, transforms.CenterCrop)), None)
    normalize = next((s for s in steps if isinstance(s, transforms.Normalize)), None)
    known = (transforms.Resize, transforms.CenterCrop, transforms.Normalize)
    others = [type(s).__name__ for s in steps if not isinstance(s, known)]
    unsupported = [n for n in others if n not in ("MaybeConvertMode", "MaybeToTensor", "ToTensor")]
    if (
        resize is None
        or crop is None
        or normalize is None
        or unsupported
        or not isinstance(resize.size, int)
        or resize.max_size is not None
        or resize.interpolation.value not in ("bicubic", "bilinear", "nearest")
        or crop.size[0] != crop.size[1]
        or crop.size[0] > resize.size
    ):
        raise ModelLoadError(
            f"this model's preprocessing is not supported by EMBED_RUNTIME=onnx: {transform}; "
            f"set EMBED_RUNTIME=torch"
        )
    mean = tuple(float(v) for v in normalize.mean)
    std = tuple(float(v) for v in normalize.std)
    return Preprocessing(
        resize=resize.size,
        interpolation=resize.interpolation.value,
        crop=int(crop.size[0]),
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
    )
