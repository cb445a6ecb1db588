"""The process's face model, for FACE_MODEL: created cheaply, loaded on first use (or by the boot
self-check), one per process, never inherited across a fork."""

from __future__ import annotations

from photoembed.config import Settings
from photoembed.faces.contract import FaceModel
from photoembed.lazy import PerProcess

_face_model: PerProcess[FaceModel] = PerProcess()


def face_model(settings: Settings) -> FaceModel:
    def create() -> FaceModel:
        if settings.face_model == "insightface":
            from photoembed.faces.insightface_model import InsightFaceModel

            return InsightFaceModel(settings)
        from photoembed.faces.dlib_model import DlibFaceModel

        return DlibFaceModel(settings)

    return _face_model.get(create)
