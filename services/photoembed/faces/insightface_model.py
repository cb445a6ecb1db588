"""FACE_MODEL=insightface: InsightFace's SCRFD detector and ArcFace recogniser as ONNX files the
operator brings (Immich's `buffalo_l`: det_10g.onnx and w600k_r50.onnx, non-commercial research
licence), run in ONNX Runtime on the CPU or CUDA.

The detector takes (1, 3, H, W) RGB normalised (x - 127.5) / 128 and gives, for strides 8, 16 and
32 with two anchors per cell, scores (N, 1), box distances (N, 4) and landmark offsets (N, 10), in
units of the stride; the recogniser takes a 112x112 face aligned to ArcFace's five-point template,
normalised (x - 127.5) / 127.5, and gives a 512-d vector (unit length here). Two faces of one
person sit under 1.0 apart (L2 of unit vectors, cosine similarity above 0.5).
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from photoembed.clip.errors import ModelLoadError
from photoembed.faces.contract import (
    FaceModel,
    FaceModelInfo,
    FoundFace,
    detection_image,
    non_maximum_suppression,
)
from photoembed.faces.quality import face_quality
from photoembed.logging import get_logger

log = get_logger(__name__)

DETECTOR_FILE = "det_10g.onnx"
RECOGNISER_FILE = "w600k_r50.onnx"
MATCH_DISTANCE = 1.0
STRIDES = (8, 16, 32)
ANCHORS = 2
DETECT_SIDE = 640
NMS_OVERLAP = 0.4
MIN_SCORE = 0.5
CHIP_SIDE = 112
# ArcFace's template: left eye, right eye, nose, left and right mouth corner in a 112x112 chip
TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 rotation + uniform scale + shift taking `source` points closest to `target`
    (Umeyama's least squares)."""
    src_mean, dst_mean = source.mean(axis=0), target.mean(axis=0)
    src, dst = source - src_mean, target - dst_mean
    covariance = dst.T @ src / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / src.var(axis=0).sum()
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def aligned_chip(image: Image.Image, landmarks: np.ndarray) -> Image.Image:
    forward = np.vstack([similarity_transform(landmarks, TEMPLATE), [0, 0, 1]])
    inverse = np.linalg.inv(forward)[:2].ravel()
    return image.transform(
        (CHIP_SIDE, CHIP_SIDE), Image.Transform.AFFINE, tuple(inverse), Image.Resampling.BILINEAR
    )


def decode_detections(
    outputs: list[np.ndarray], side: int, min_score: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SCRFD's nine outputs (scores, boxes, landmarks per stride) to boxes (x1, y1, x2, y2),
    scores and landmarks (5, 2) in the pixels of the `side`-square input, after NMS."""
    boxes, scores, points = [], [], []
    for level, stride in enumerate(STRIDES):
        score = outputs[level].reshape(-1)
        distance = outputs[level + len(STRIDES)].reshape(-1, 4) * stride
        offsets = outputs[level + 2 * len(STRIDES)].reshape(-1, 10) * stride
        cells = side // stride
        ys, xs = np.mgrid[:cells, :cells]
        centres = np.repeat(np.stack([xs.ravel(), ys.ravel()], axis=1) * stride, ANCHORS, axis=0)
        chosen = score >= min_score
        centre = centres[chosen].astype(np.float64)
        boxes.append(
            np.hstack([centre - distance[chosen][:, :2], centre + distance[chosen][:, 2:]])
        )
        scores.append(score[chosen])
        points.append(centre[:, None, :] + offsets[chosen].reshape(-1, 5, 2))
    all_boxes, all_scores, all_points = np.vstack(boxes), np.concatenate(scores), np.vstack(points)
    keep = non_maximum_suppression(all_boxes, all_scores, NMS_OVERLAP) if len(all_scores) else []
    return all_boxes[keep], all_scores[keep], all_points[keep]


class InsightFaceModel(FaceModel):
    def _default_min_score(self) -> float:
        return MIN_SCORE

    def _folder(self) -> Path:
        folder = self.settings.face_model_dir
        if folder is None:
            raise ModelLoadError(
                "FACE_MODEL=insightface needs FACE_MODEL_DIR: a folder holding "
                f"{DETECTOR_FILE} (SCRFD) and {RECOGNISER_FILE} (ArcFace), e.g. InsightFace's "
                "buffalo_l; or set FACE_MODEL=dlib"
            )
        missing = [n for n in (DETECTOR_FILE, RECOGNISER_FILE) if not (folder / n).is_file()]
        if missing:
            raise ModelLoadError(
                f"FACE_MODEL_DIR={folder} lacks {', '.join(missing)}: copy InsightFace's "
                f"buffalo_l {DETECTOR_FILE} and {RECOGNISER_FILE} there, or set FACE_MODEL=dlib"
            )
        return folder

    def _load(self) -> FaceModelInfo:
        started = time.perf_counter()
        import onnxruntime

        folder = self._folder()
        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        providers = [p for p in wanted if p in onnxruntime.get_available_providers()]
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self._detector: Any = onnxruntime.InferenceSession(
            str(folder / DETECTOR_FILE), options, providers=providers
        )
        self._recogniser: Any = onnxruntime.InferenceSession(
            str(folder / RECOGNISER_FILE), options, providers=providers
        )
        self._run_lock = threading.Lock()
        dim = int(self._recogniser.get_outputs()[0].shape[-1])
        digest = hashlib.sha256()
        for name in (DETECTOR_FILE, RECOGNISER_FILE):
            digest.update((folder / name).read_bytes())
        info = FaceModelInfo(
            identity=f"insightface:scrfd-arcface:{digest.hexdigest()[:12]}",
            detector="scrfd",
            dim=dim,
            match_distance=MATCH_DISTANCE,
            load_seconds=time.perf_counter() - started,
        )
        log.info("face_model.loaded", model=info.identity, folder=str(folder), providers=providers)
        return info

    def _detect(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Letterboxed into the detector's square (top left, zero padding)."""
        factor = max(image.size) / DETECT_SIDE
        size = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
        canvas = np.zeros((DETECT_SIDE, DETECT_SIDE, 3), dtype=np.float32)
        canvas[: size[1], : size[0]] = np.asarray(image.resize(size, Image.Resampling.BILINEAR))
        blob = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]
        name = self._detector.get_inputs()[0].name
        outputs = self._detector.run(None, {name: blob})
        boxes, scores, points = decode_detections(outputs, DETECT_SIDE, self.min_score())
        return boxes, scores, points, factor

    def _embed(self, chip: Image.Image) -> np.ndarray:
        blob = ((np.asarray(chip, dtype=np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
        name = self._recogniser.get_inputs()[0].name
        vector: np.ndarray = self._recogniser.run(None, {name: blob})[0][0].astype(np.float32)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def find_faces(self, image: Image.Image) -> list[FoundFace]:
        self.load()
        scaled, scale_back = detection_image(image.convert("RGB"), self.settings.face_detect_side)
        found = []
        with self._run_lock:
            boxes, scores, points, factor = self._detect(scaled)
            for box, score, landmarks in zip(boxes * factor, scores, points * factor, strict=True):
                x1, y1, x2, y2 = (float(v) for v in box)
                side = min(x2 - x1, y2 - y1)
                if side < self.settings.face_min_size:
                    continue
                chip = aligned_chip(scaled, landmarks)
                quality = face_quality(
                    side,
                    chip,
                    (tuple(landmarks[0]), tuple(landmarks[1]), tuple(landmarks[2])),
                    float(score),
                )
                found.append(
                    FoundFace(
                        (x1, y1, x2 - x1, y2 - y1),
                        [(float(x), float(y)) for x, y in landmarks],
                        float(score),
                        quality,
                        self._embed(chip),
                    )
                )
        return [face.scaled(scale_back) for face in found]
