"""What a face model gives, whichever one it is: faces with a box, five landmarks, a detection
score, a quality and an identity vector, and the model's identity and match distance."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from PIL import Image

from photoembed.config import Settings
from photoembed.lazy import LoadOnce

Point = tuple[float, float]


@dataclass(frozen=True)
class FoundFace:
    """One face, in the pixels of the image it was found in."""

    box: tuple[float, float, float, float]  # x, y, width, height
    landmarks: list[Point]  # five points, in the model's own order
    score: float  # the detector's own scale
    quality: float  # 0..1, photoembed.faces.quality
    vector: np.ndarray  # identity vector (dlib: as the model gives it; ArcFace: unit length)

    def scaled(self, factor: float) -> FoundFace:
        x, y, w, h = self.box
        return FoundFace(
            box=(x * factor, y * factor, w * factor, h * factor),
            landmarks=[(px * factor, py * factor) for px, py in self.landmarks],
            score=self.score,
            quality=self.quality,
            vector=self.vector,
        )


@dataclass(frozen=True)
class FaceModelInfo:
    identity: str  # stored beside every face vector, like a CLIP model's identity
    dim: int
    match_distance: float  # L2 distance under which two faces are the same person
    load_seconds: float


class FaceModel(ABC):
    """A detector, an aligner and a recogniser: one per process, loaded on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._model = LoadOnce(self._load)

    def load(self) -> FaceModelInfo:
        return self._model.get()

    def match_distance(self) -> float:
        return self.settings.face_match_distance or self.load().match_distance

    @abstractmethod
    def _load(self) -> FaceModelInfo: ...

    @abstractmethod
    def find_faces(self, image: Image.Image) -> list[FoundFace]:
        """Every face of at least FACE_MIN_SCORE and FACE_MIN_SIZE in an RGB image."""


def detection_image(image: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """The image scaled to at most `max_side` on its long side, and the factor back to the
    image's own pixels."""
    side = max(image.size)
    if side <= max_side:
        return image, 1.0
    factor = side / max_side
    size = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0), factor
