"""How usable a face is for knowing who it is, and what that does to the photo's quality score.

A face's quality is in 0..1:

    quality = 0.30 * size + 0.30 * sharpness + 0.25 * frontal + 0.15 * confidence

* size: the box's shorter side over 112 px (the size recognisers are trained at), capped at 1;
* sharpness: 1 - exp(-v / 150) for v the variance of the Laplacian of the aligned grey chip;
* frontal: 1 - |offset| where offset is how far the nose sits from the midpoint between the eyes,
  along the line between the eyes, in half eye-distances (0 for a face turned fully sideways);
* confidence: the detector's score mapped to 0..1 by the model (dlib: score / 1.5; SCRFD: as is).

A person photo is as useful as its best face (QUALITY_VERSION 2):

    quality_score = image_quality * (0.5 + 0.5 * best_face_quality)

so a photo with no usable face keeps half its image score, one with a perfect face keeps all of
it. Until the face stage has run (or with faces off) quality_score is the image score alone
(version 1).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter

from photoembed.faces.contract import Point

QUALITY_VERSION = 2  # version 1 (repository.IMAGE_ONLY_VERSION): the image score alone
WEIGHTS = {"size": 0.30, "sharpness": 0.30, "frontal": 0.25, "confidence": 0.15}
FULL_SIZE_PX = 112.0
SHARPNESS_SCALE = 150.0


def frontalness(left_eye: Point, right_eye: Point, nose: Point) -> float:
    eyes = np.subtract(right_eye, left_eye)
    distance = float(np.linalg.norm(eyes))
    if distance == 0:
        return 0.0
    middle = np.add(left_eye, right_eye) / 2
    offset = float(np.dot(np.subtract(nose, middle), eyes / distance)) / (distance / 2)
    return max(0.0, 1.0 - abs(offset))


def sharpness(chip: Image.Image) -> float:
    laplacian = np.asarray(
        chip.convert("L").filter(ImageFilter.Kernel((3, 3), [0, 1, 0, 1, -4, 1, 0, 1, 0], 1, 128)),
        dtype=np.float64,
    )
    return 1.0 - math.exp(-float(laplacian.var()) / SHARPNESS_SCALE)


def face_quality(
    box_side: float, chip: Image.Image, eyes_and_nose: tuple[Point, Point, Point], confidence: float
) -> float:
    parts = {
        "size": min(1.0, box_side / FULL_SIZE_PX),
        "sharpness": sharpness(chip),
        "frontal": frontalness(*eyes_and_nose),
        "confidence": min(1.0, max(0.0, confidence)),
    }
    return round(sum(WEIGHTS[name] * value for name, value in parts.items()), 4)


def photo_quality(image_quality: float, best_face_quality: float | None) -> float:
    return round(image_quality * (0.5 + 0.5 * (best_face_quality or 0.0)), 4)
