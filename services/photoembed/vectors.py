"""Writing vectors: one row per photo and model identity, the same way from every writer (the
worker's pipeline and the backfill)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.orm import Session

from photoembed.clip.contract import LoadedInfo
from photoembed.images import DECODE_VERSION


def vector_literal(vector: Sequence[float]) -> str:
    """pgvector's text form, for `CAST(:v AS vector)`."""
    return "[" + ",".join(repr(float(v)) for v in vector) + "]"


def insert_embedding(
    session: Session,
    photo_id: uuid.UUID,
    vector: Sequence[float],
    loaded: LoadedInfo,
    decode_mode: str,
) -> None:
    """Store (or refresh) the photo's vector of this model, with the decode that made it."""
    plan = loaded.plan
    session.execute(
        text(
            """
            INSERT INTO embeddings (photo_id, model, backend, model_name, pretrained,
                                    weights_sha256, quick_gelu, dim, vector, decode_version,
                                    decode_mode, created_at)
            VALUES (:photo_id, :model, :backend, :model_name, :pretrained, :sha, :quick_gelu,
                    :dim, CAST(:vector AS vector), :decode_version, :decode_mode, now())
            ON CONFLICT (photo_id, model)
            DO UPDATE SET vector = EXCLUDED.vector, decode_version = EXCLUDED.decode_version,
                          decode_mode = EXCLUDED.decode_mode, created_at = EXCLUDED.created_at
            """
        ),
        {
            "photo_id": photo_id,
            "model": loaded.identity,
            "backend": plan.backend,
            "model_name": plan.model_name,
            "pretrained": plan.pretrained,
            "sha": loaded.weights_sha256,
            "quick_gelu": plan.quick_gelu,
            "dim": len(vector),
            "vector": vector_literal(vector),
            "decode_version": DECODE_VERSION,
            "decode_mode": decode_mode,
        },
    )
