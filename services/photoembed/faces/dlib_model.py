"""FACE_MODEL=dlib: a detector (FACE_DETECTOR: BlazeFace, photoembed.faces.blazeface, by default;
or dlib's HOG, each face confirmed upright), then dlib's 5-point landmark model (CC0) and its
ResNet 128-d recogniser (LFW 99.38%), as the `dlib-bin` and `face-recognition-models` packages
ship them.

dlib's own documentation puts the same person under 0.6 (L2); measured on the real faces the
packages ship (docs/faces.md), variants of one person sit 0.05-0.35 apart and different people
0.66-0.84, so the match distance is 0.5.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from photoembed.clip.errors import ModelLoadError
from photoembed.faces.blazeface import BlazeFaceDetector
from photoembed.faces.contract import FaceModel, FaceModelInfo, FoundFace, detection_image
from photoembed.faces.quality import face_quality
from photoembed.logging import get_logger
from photoembed.metrics import face_step

log = get_logger(__name__)

# a face's dlib rectangle, its 5-point shape, its score and its confidence (0..1) for quality
Candidate = tuple[Any, Any, float, float]

MATCH_DISTANCE = 0.5
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
RECOGNISER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150
CHIP_PADDING = 0.25
# HOG's score depends on a face's tilt (a face turned 20 degrees scores ~0.3, like a badge on a
# shirt), so candidates are taken down to this score and each is scored again on its upright,
# aligned chip against FACE_MIN_SCORE. Measured on the package faces and their variants: real
# faces score 0.29 or more here and 0.78 or more upright; other things at most -0.02 here when
# they pass upright, and at most 0.28 upright when they pass here (docs/faces.md).
CANDIDATE_SCORE = 0.0
VERIFY_CHIP_SIZE = 200
VERIFY_PADDING = 0.6
MAX_OVERLAP = 0.3
SCORE_FOR_FULL_CONFIDENCE = 1.5
# FACE_MIN_SCORE=0: each detector's own threshold. Measured on the package faces, their variants
# and the photos without a face (docs/faces.md): BlazeFace scored real faces 0.64 or more (the
# camera man, 43 px, in a scene) and nothing else above 0.56; HOG's upright chips as above.
BLAZEFACE_MIN_SCORE = 0.6
HOG_MIN_SCORE = 0.5
INSTALL_HINT = (
    "pip install dlib-bin face-recognition-models (both are in photo-embed's dependencies)"
)


def models_folder() -> Path:
    """The folder of face-recognition-models' files, found without importing the package (its
    __init__ needs pkg_resources, which new setuptools no longer has)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"FACE_MODEL=dlib needs the face-recognition-models package: {INSTALL_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DlibFaceModel(FaceModel):
    """The detector of FACE_DETECTOR, then dlib's landmarks and ResNet. The model's identity
    names the recogniser and the alignment, not the detector: vectors of faces that either
    detector found are comparable (FaceModelInfo.detector says which one found new faces)."""

    def _default_min_score(self) -> float:
        return BLAZEFACE_MIN_SCORE if self.settings.face_detector == "blazeface" else HOG_MIN_SCORE

    def _load(self) -> FaceModelInfo:
        started = time.perf_counter()
        try:
            import dlib
        except ImportError as exc:
            raise ModelLoadError(f"FACE_MODEL=dlib needs dlib ({exc}): {INSTALL_HINT}") from None
        folder = models_folder()
        missing = [
            name for name in (LANDMARKS_FILE, RECOGNISER_FILE) if not (folder / name).is_file()
        ]
        if missing:
            raise ModelLoadError(f"missing {', '.join(missing)} in {folder}: {INSTALL_HINT}")
        self._detector: Any = dlib.get_frontal_face_detector()
        self._blazeface = (
            BlazeFaceDetector() if self.settings.face_detector == "blazeface" else None
        )
        self._landmarks: Any = dlib.shape_predictor(str(folder / LANDMARKS_FILE))
        self._recogniser: Any = dlib.face_recognition_model_v1(str(folder / RECOGNISER_FILE))
        self._dlib: Any = dlib
        # dlib's objects are not safe to call from two threads at once
        self._run_lock = threading.Lock()
        digest = _file_sha256(folder / RECOGNISER_FILE)[:12]
        info = FaceModelInfo(
            identity=f"dlib:resnet-v1:{digest}:5pt",
            detector=self.settings.face_detector,
            dim=128,
            match_distance=MATCH_DISTANCE,
            load_seconds=time.perf_counter() - started,
        )
        log.info(
            "face_model.loaded",
            model=info.identity,
            detector=info.detector,
            folder=str(folder),
            seconds=round(info.load_seconds, 2),
        )
        return info

    def find_faces(self, image: Image.Image) -> list[FoundFace]:
        """The detector's faces, each described by the ResNet on its chip aligned by the 5-point
        landmarks."""
        self.load()
        with face_step("scale"):
            scaled, factor = detection_image(image, self.settings.face_detect_side)
            pixels = np.asarray(scaled.convert("RGB"))
        found: list[FoundFace] = []
        with self._run_lock:
            candidates = (
                self._blazeface_candidates(scaled)
                if self._blazeface is not None
                else self._hog_candidates(pixels)
            )
            for rect, shape, score, confidence in candidates:
                side = float(min(rect.width(), rect.height()))
                points = [(float(p.x), float(p.y)) for p in shape.parts()]
                with face_step("describe"):
                    chip = self._dlib.get_face_chip(
                        pixels, shape, size=CHIP_SIZE, padding=CHIP_PADDING
                    )
                    descriptor = self._recogniser.compute_face_descriptor(chip)
                vector = np.asarray(descriptor, dtype=np.float32)
                # dlib's 5 points: one eye's outer and inner corner, the other's, the nose
                eye_a = tuple(np.mean(points[0:2], axis=0))
                eye_b = tuple(np.mean(points[2:4], axis=0))
                quality = face_quality(
                    side, Image.fromarray(chip), (eye_b, eye_a, points[4]), confidence
                )
                found.append(FoundFace(_box(rect), points, score, quality, vector))
        return [face.scaled(factor) for face in found]

    def _blazeface_candidates(self, image: Image.Image) -> list[Candidate]:
        """BlazeFace's faces, each given dlib's landmarks inside the box HOG would have drawn
        (measured on the package faces: the same centre 3% lower, 0.94 of the side)."""
        assert self._blazeface is not None
        with face_step("detect"):
            detections = self._blazeface.detect(
                image, self.min_score(), self.settings.face_min_size
            )
        pixels = np.asarray(image)
        candidates = []
        for detection in detections:
            x, y, w, h = detection.box
            half = 0.47 * w
            cx, cy = x + w / 2, y + h / 2 + 0.03 * h
            rect = self._dlib.rectangle(
                round(cx - half), round(cy - half), round(cx + half), round(cy + half)
            )
            with face_step("align"):
                shape = self._landmarks(pixels, rect)
            candidates.append((rect, shape, detection.score, detection.score))
        return candidates

    def _hog_candidates(self, pixels: np.ndarray) -> list[Candidate]:
        """HOG candidates down to CANDIDATE_SCORE, each confirmed on its upright, aligned chip
        (where the score no longer depends on the face's tilt) against the minimum score."""
        with face_step("detect"):
            rects, scores, _ = self._detector.run(
                pixels, self.settings.face_upsample, CANDIDATE_SCORE
            )
        candidates: list[Candidate] = []
        for rect, _score in sorted(zip(rects, scores, strict=True), key=lambda c: -c[1]):
            box = _box(rect)
            if min(box[2], box[3]) < self.settings.face_min_size or any(
                _overlap(box, _box(kept)) > MAX_OVERLAP for kept, *_ in candidates
            ):
                continue
            with face_step("align"):
                shape = self._landmarks(pixels, rect)
                upright = self._dlib.get_face_chip(
                    pixels, shape, size=VERIFY_CHIP_SIZE, padding=VERIFY_PADDING
                )
                _, confirmed, _ = self._detector.run(upright, 0, -1.0)
                score = float(max(confirmed, default=-1.0))
            if score >= self.min_score():
                candidates.append((rect, shape, score, score / SCORE_FOR_FULL_CONFIDENCE))
        return candidates


def _box(rect: Any) -> tuple[float, float, float, float]:
    return (float(rect.left()), float(rect.top()), float(rect.width()), float(rect.height()))


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - w * h
    return w * h / union if union > 0 else 0.0
