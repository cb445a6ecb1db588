"""Vectors in the database: written one row per photo and model identity, the same way from every
writer (the worker's pipeline and the backfill), and how one library's are scanned.

Every library's vectors share one HNSW index per dimension. A search within a library that holds
a good share of the index walks the graph and keeps the library's rows (iterative scans go on
until enough pass); a small library's rows are so few among the others that the walk would cross
much of the graph to collect them, so they are ranked exactly instead, every one of them, through
the (library_id, model, dim) index: `ranks_exactly`. Either way the statement is planned for the
library it names (`plan_for_this_library`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Literal

from sqlalchemy import text
from sqlalchemy.orm import Session

from photoembed.clip.contract import LoadedInfo
from photoembed.images import DECODE_VERSION


def vector_literal(vector: Sequence[float]) -> str:
    """pgvector's text form, for `CAST(:v AS vector)`."""
    return "[" + ",".join(repr(float(v)) for v in vector) + "]"


# A library is ranked exactly while it holds at most sqrt(EXACT_FACTOR x the vectors in the
# table) of them, and never fewer than EXACT_LEAST: an exact ranking costs what the library holds,
# a filtered walk of the graph what the index holds over the library's share of it. Measured at
# 100,000 photos in 1,000 libraries (docs/scale.md): the two cost the same near 5,000, for a query
# far from every photo (a text); a photo's own neighbours are found fast either way.
EXACT_FACTOR = 250
EXACT_LEAST = 1000
VectorTable = Literal["embeddings", "faces"]


def plan_for_this_library(session: Session) -> None:
    """Until the transaction ends, plan each statement for its values. A prepared statement (the
    driver prepares one run often) would go to a generic plan, made for a library of average size:
    a scan of the whole library sorted, where the largest library's search walks the graph in a
    few milliseconds (160 ms against 3 ms measured at 30,000 photos)."""
    session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


def ranks_exactly(
    session: Session,
    table: VectorTable,
    library_id: uuid.UUID,
    model: str,
    dim: int,
    most: int | None = None,
) -> bool:
    """Whether the library's vectors of `model` are few enough to rank every one: at most `most`,
    or by default the bound above for the table's size (its planner estimate). Counted from the
    (library_id, model, dim) index, only up to the bound."""
    few = session.execute(
        text(
            f"""
            WITH bound AS (
                SELECT coalesce(CAST(:most AS integer), greatest(:least, floor(sqrt(
                           :factor * greatest(reltuples, 0))))::integer) AS most
                  FROM pg_class WHERE oid = CAST(:table AS regclass))
            SELECT count(*) <= (SELECT most FROM bound) FROM (
                SELECT 1 FROM {table} WHERE library_id = :library AND model = :model
                   AND dim = :dim LIMIT (SELECT most + 1 FROM bound)) AS counted
            """  # noqa: S608 - the table is one of two names; the rest are bound parameters
        ),
        {
            "library": library_id,
            "model": model,
            "dim": dim,
            "most": most,
            "least": EXACT_LEAST,
            "factor": EXACT_FACTOR,
            "table": table,
        },
    ).scalar_one()
    return bool(few)


def insert_embedding(
    session: Session,
    photo_id: uuid.UUID,
    vector: Sequence[float],
    loaded: LoadedInfo,
    decode_mode: str,
) -> None:
    """Store (or refresh) the photo's vector of this model, with the decode that made it, in the
    photo's library."""
    plan = loaded.plan
    session.execute(
        text(
            """
            INSERT INTO embeddings (photo_id, library_id, model, backend, model_name, pretrained,
                                    weights_sha256, quick_gelu, dim, vector, decode_version,
                                    decode_mode, created_at)
            SELECT id, library_id, :model, :backend, :model_name, :pretrained, :sha, :quick_gelu,
                   :dim, CAST(:vector AS vector), :decode_version, :decode_mode, now()
              FROM photos WHERE id = :photo_id
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
