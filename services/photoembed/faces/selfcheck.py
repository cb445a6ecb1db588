"""The face model's part of the boot self-check, on clip/'s machinery: the load must emit no
warning at all, and the probe portrait (a crop of scikit-image's public-domain NASA astronaut)
must give exactly one face whose vector agrees with the recorded one.

References: one ships with the package for dlib's files (`references/`), and `photoembed
selfcheck --record` records one for any model under SELFCHECK_REFERENCE_DIR, which then wins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from photoembed.clip.selfcheck import (
    Finding,
    SelfCheckResult,
    compare_with_reference,
    load_recording,
    record_reference,
)
from photoembed.config import Settings
from photoembed.faces.contract import FaceModel, FaceModelInfo
from photoembed.logging import get_logger

log = get_logger(__name__)

PROBE = Path(__file__).with_name("probe_face.jpg")
SHIPPED_REFERENCES = Path(__file__).with_name("references")
VECTOR_TOLERANCE = 1e-3


def reference_key(info: FaceModelInfo) -> str:
    """What a reference is recorded for: the probe's vector depends on the detector's box too."""
    return f"{info.identity}+{info.detector}"


def _file_name(key: str) -> str:
    return "face-" + "".join(c if c.isalnum() or c in "-." else "_" for c in key) + ".json"


def reference_path(settings: Settings, key: str) -> Path:
    recorded = settings.reference_dir / _file_name(key)
    shipped = SHIPPED_REFERENCES / _file_name(key)
    return recorded if recorded.is_file() or not shipped.is_file() else shipped


def run_face_selfcheck(
    settings: Settings, model: FaceModel, *, record: bool = False
) -> SelfCheckResult:
    info, findings = load_recording(model.load, what="the face model")
    result = SelfCheckResult(findings=findings)
    if info is None:
        return result
    result.identity = info.identity
    with Image.open(PROBE) as probe:
        faces = model.find_faces(probe.convert("RGB"))
    if len(faces) != 1:
        findings.append(
            Finding(
                "face_probe",
                f"the face model {info.identity} found {len(faces)} faces in the probe portrait "
                f"{PROBE.name}, where there is exactly one: check FACE_MIN_SCORE, FACE_MIN_SIZE "
                f"and the model files",
            )
        )
        return result
    vector = faces[0].vector.astype(np.float64)
    if vector.shape != (info.dim,) or not np.all(np.isfinite(vector)):
        findings.append(
            Finding(
                "face_vector", f"the probe face's vector has shape {vector.shape} or is not finite"
            )
        )
        return result
    log.info(
        "selfcheck.face_probe", model=info.identity, score=faces[0].score, quality=faces[0].quality
    )
    key = reference_key(info)
    path = reference_path(settings, key)
    result.reference_path = path
    if record:
        path = settings.reference_dir / _file_name(key)
        record_reference(path, vector, key)
        result.reference_path, result.recorded = path, True
        return result
    mismatch = compare_with_reference(
        path, vector, key, VECTOR_TOLERANCE, "Check the face model's files."
    )
    if mismatch is not None:
        findings.append(mismatch)
    return result
