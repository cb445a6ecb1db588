"""The process's face model, for FACE_MODEL: created cheaply, loaded on first use (or by the boot
self-check), one per process, never inherited across a fork."""

from __future__ import annotations

from photoembed.config import Settings
from photoembed.faces.contract import FaceModel
from photoembed.faces.grouping import GroupingRules
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


def rules_for(settings: Settings, identity: str) -> GroupingRules:
    """The grouping's rules for faces of a model known by its identity, without loading it (the
    API places faces users choose): FACE_MATCH_DISTANCE, or the model's own distance."""
    if identity.startswith("insightface:"):
        from photoembed.faces.insightface_model import MATCH_DISTANCE
    else:
        from photoembed.faces.dlib_model import MATCH_DISTANCE
    return GroupingRules(settings.face_match_distance or MATCH_DISTANCE, settings.face_min_faces)
