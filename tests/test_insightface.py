"""FACE_MODEL=insightface, run for real in ONNX Runtime on small ONNX models that these tests build
with SCRFD's and ArcFace's inputs and outputs: the anchor decoding, NMS, letterbox scaling,
five-point alignment and the refusal without files; then the whole stage through a real worker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from photoembed.clip.errors import ModelLoadError
from photoembed.config import Settings
from photoembed.faces.insightface_model import (
    DETECTOR_FILE,
    RECOGNISER_FILE,
    STRIDES,
    TEMPLATE,
    InsightFaceModel,
    similarity_transform,
)
from photoembed.faces.selfcheck import run_face_selfcheck
from tests.helpers import encode, wait_for_faces

SIDE = 640
# One face, found at stride 16 in cell (10, 12), anchor 0: its centre is (160, 192) in the
# detector's 640 x 640 input. The next anchor of the same cell sees the same face less surely
# (NMS keeps one) and a far cell something below FACE_MIN_SCORE.
FACE_INDEX = (12 * (SIDE // 16) + 10) * 2
BOX = (2.0, 3.0, 2.0, 3.0)  # left, top, right, bottom distances in strides
POINTS = [(-1.0, -1.0), (1.0, -1.0), (0.0, 0.0), (-0.8, 1.0), (0.8, 1.0)]


def _constant_output(name: str, value: np.ndarray, zero: str) -> tuple[list, str]:
    """`name` = value + 0 * mean(input): the graph reads its input, as the real one does."""
    const = helper.make_node(
        "Constant", [], [f"{name}_c"], value=helper.make_tensor(
            f"{name}_v", TensorProto.FLOAT, value.shape, value.ravel().tolist()
        ),
    )  # fmt: skip
    return [const, helper.make_node("Add", [f"{name}_c", zero], [name])], name


def build_detector(path: Path) -> None:
    nodes = [
        helper.make_node("ReduceMean", ["input.1"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero_c"], ["zero"]),
        helper.make_node(
            "Constant", [], ["zero_c"], value=helper.make_tensor("z", TensorProto.FLOAT, [], [0.0])
        ),
    ]
    outputs = []
    values: dict[str, np.ndarray] = {}
    for stride in STRIDES:
        count = (SIDE // stride) ** 2 * 2
        scores = np.zeros((count, 1), np.float32)
        boxes = np.ones((count, 4), np.float32)
        points = np.zeros((count, 10), np.float32)
        if stride == 16:
            scores[FACE_INDEX, 0], scores[FACE_INDEX + 1, 0] = 0.9, 0.8
            boxes[FACE_INDEX] = boxes[FACE_INDEX + 1] = BOX
            points[FACE_INDEX] = points[FACE_INDEX + 1] = np.ravel(POINTS)
            scores[10, 0] = 0.3  # below FACE_MIN_SCORE
        values[f"score_{stride}"], values[f"bbox_{stride}"] = scores, boxes
        values[f"kps_{stride}"] = points
    order = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in STRIDES]
    for name in order:
        made, output = _constant_output(name, values[name], "zero")
        nodes += made
        outputs.append(
            helper.make_tensor_value_info(output, TensorProto.FLOAT, list(values[name].shape))
        )
    graph = helper.make_graph(
        nodes,
        "scrfd-shaped",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, SIDE, SIDE])],
        outputs,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def build_recogniser(path: Path) -> None:
    """(1, 3, 112, 112) -> (1, 512): the chip's mean colour through a fixed projection."""
    weights = np.random.default_rng(7).normal(size=(3, 512)).astype(np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node(
            "Constant", [], ["w"], value=helper.make_tensor(
                "wv", TensorProto.FLOAT, weights.shape, weights.ravel().tolist()
            ),
        ),
        helper.make_node("MatMul", ["flat", "w"], ["683"]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "arcface-shaped",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, 512])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("buffalo")
    build_detector(folder / DETECTOR_FILE)
    build_recogniser(folder / RECOGNISER_FILE)
    return folder


def _settings(folder: Path | None, **extra: object) -> Settings:
    return Settings(face_model="insightface", face_model_dir=folder, **extra)


def test_the_detector_outputs_decode_to_one_face_in_the_photos_pixels(model_dir):
    # given a 1280 x 960 photo: letterboxed into 640 x 640 at half scale
    model = InsightFaceModel(_settings(model_dir, face_detect_side=1280))
    photo = Image.new("RGB", (1280, 960), (90, 120, 150))

    found = model.find_faces(photo)

    # then one face (the weaker twin suppressed, the low score dropped), in the photo's pixels
    assert len(found) == 1
    face = found[0]
    assert face.score == pytest.approx(0.9)
    assert np.allclose(face.box, (2 * 128, 2 * 144, 2 * 64, 2 * 96), atol=1e-3)
    expected = [(2 * (160 + 16 * dx), 2 * (192 + 16 * dy)) for dx, dy in POINTS]
    assert np.allclose(face.landmarks, expected, atol=1e-3)
    assert face.vector.shape == (512,)
    assert np.linalg.norm(face.vector) == pytest.approx(1.0, abs=1e-5)
    assert 0 < face.quality <= 1


def test_the_alignment_maps_the_landmarks_onto_arcfaces_template():
    angle = np.radians(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = TEMPLATE @ rotation.T * 2.5 + (300, 120)
    matrix = similarity_transform(landmarks, TEMPLATE)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.allclose(mapped, TEMPLATE, atol=1e-6)


def test_missing_files_are_refused_with_what_to_put_where(tmp_path):
    with pytest.raises(ModelLoadError, match="FACE_MODEL_DIR"):
        InsightFaceModel(_settings(None)).load()
    (tmp_path / DETECTOR_FILE).write_bytes(b"")
    with pytest.raises(ModelLoadError, match=RECOGNISER_FILE):
        InsightFaceModel(_settings(tmp_path)).load()


def test_the_selfcheck_records_and_compares_its_probe(model_dir, tmp_path):
    # the probe portrait is 240 px tall: the made-up face in it is 36 x 54 px
    settings = _settings(model_dir, selfcheck_reference_dir=tmp_path, face_min_size=16)
    recorded = run_face_selfcheck(settings, InsightFaceModel(settings), record=True)
    assert recorded.ok and recorded.recorded and recorded.identity.startswith("insightface:")
    assert recorded.reference_path is not None
    reference = json.loads(recorded.reference_path.read_text())
    assert run_face_selfcheck(settings, InsightFaceModel(settings)).ok

    # when the recorded probe no longer matches what the model gives (other weights, another
    # runtime): one component off by 0.01
    reference["vector"][0] += 0.01
    recorded.reference_path.write_text(json.dumps(reference))
    refused = run_face_selfcheck(settings, InsightFaceModel(settings))
    assert not refused.ok
    assert [finding.code for finding in refused.findings] == ["reference_mismatch"]
    assert "1.00e-02" in refused.findings[0].message


@pytest.mark.slow
def test_a_worker_with_insightface_stores_its_faces(settings, api, start_service, model_dir):
    settings = settings.model_copy(
        update={
            "faces_enabled": True,
            "face_model": "insightface",
            "face_model_dir": model_dir,
            "face_min_size": 16,
        }
    )
    start_service("worker", settings).wait_for_log("selfcheck.passed", timeout=180)
    photo = Image.new("RGB", (1280, 960), (90, 120, 150))
    photo_id = api.post("/photos", files={"file": ("p.jpg", encode(photo))}).json()["id"]
    assert wait_for_faces(api, photo_id)["face_count"] == 1
    face = api.get(f"/photos/{photo_id}/faces").json()["items"][0]
    assert face["model"].startswith("insightface:scrfd-arcface:")
    # detected at FACE_DETECT_SIDE (1024): the box comes back in the photo's own pixels
    assert np.allclose(face["box"], (256, 288, 128, 192), atol=2)
