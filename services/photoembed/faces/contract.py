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
    detector: str  # stored beside every face: what found it (the identity's vectors are alike)
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

    def min_score(self) -> float:
        """FACE_MIN_SCORE, or the detector's own threshold where it is 0."""
        return self.settings.face_min_score or self._default_min_score()

    @abstractmethod
    def _default_min_score(self) -> float: ...

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


def non_maximum_suppression(boxes: np.ndarray, scores: np.ndarray, max_overlap: float) -> list[int]:
    """Indices of the boxes (x1, y1, x2, y2) kept, best score first: each drops the later ones
    that overlap it by more than `max_overlap` (intersection over union)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = list(np.argsort(-scores))
    keep = []
    while order:
        best, rest = order[0], np.array(order[1:], dtype=int)
        keep.append(int(best))
        if rest.size == 0:
            break
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]))
        overlap = w * h / (areas[best] + areas[rest] - w * h)
        order = list(rest[overlap <= max_overlap])
    return keep
