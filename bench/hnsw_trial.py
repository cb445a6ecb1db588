"""The photo index's graph options compared on one seeded library: recall@20 against brute force
over 400 query photos at several ef_search values, each with the index's `limit` nearest taken
as they are ("fetch 20") and with twice as many ranked again by the stored vectors ("fetch 40",
what the search does since migration 0012), the build time and size of each graph, and the
worker's write (one photo's row and vector a transaction) into it.

    python bench/hnsw_trial.py --photos 1000000 --options "m=24,ef_construction=128"

The first graph is the one the migrations define; each `--options` graph is built in its place.
Writes bench/hnsw-trial-<N>.json. (This is how migration 0012's m 24 / ef_construction 128 was
chosen: docs/scale.md.)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from harness import REPO, Stack, libpq_url
from scale import vector_writes
from scale_search import LIMIT, exact_top, percentiles, recall_summary

from photoembed.seeding import SeededLibrary, seed_library

INDEX = "ix_embeddings_halfvec_512"
MODEL = "trial-clip"
TRIALS = [(100, 20), (200, 20), (400, 20), (800, 20), (100, 40), (400, 40)]


def sql_recall(
    conn: psycopg.Connection,
    library: SeededLibrary,
    queries: list[int],
    ef: int,
    statement: str,
    values: dict[str, Any],
) -> tuple[list[float], list[float]]:
    """Recall@LIMIT against brute force and milliseconds of `statement` (photo ids first; the
    query vector is `%(q)s`) for each query photo, at hnsw.ef_search `ef`."""
    recalls, times = [], []
    for i in queries:
        vector = library.photo_vectors[i]
        with conn.transaction():
            conn.execute("SET LOCAL hnsw.iterative_scan = 'relaxed_order'")
            conn.execute(f"SET LOCAL hnsw.ef_search = {ef}")
            began = time.perf_counter()
            rows = conn.execute(statement, {**values, "q": str(vector.tolist())}).fetchall()
            times.append((time.perf_counter() - began) * 1000)
        truth = exact_top(library, vector, LIMIT)
        recalls.append(len(truth & {row[0] for row in rows}) / LIMIT)
    return recalls, times


def sweep(
    conn: psycopg.Connection, library: SeededLibrary, queries: list[int], ef: int, fetch: int
) -> dict[str, Any]:
    recalls, times = sql_recall(
        conn,
        library,
        queries,
        ef,
        "SELECT id FROM (SELECT e.photo_id AS id, e.vector <=> CAST(%(q)s AS vector) AS d"
        " FROM embeddings e JOIN photos p ON p.id = e.photo_id"
        " WHERE e.dim = 512 AND e.model = %(model)s AND p.status = 'READY'"
        " ORDER BY (e.vector::halfvec(512)) <=> CAST(%(q)s AS halfvec(512)) LIMIT %(fetch)s) AS c"
        " ORDER BY d LIMIT %(limit)s",
        {"model": MODEL, "fetch": fetch, "limit": LIMIT},
    )
    result = {"ef_search": ef, "fetch": fetch, "recall": recall_summary(recalls)}
    result.update(percentiles(times))
    print(f"    {result}", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--options", action="append", default=[], help="WITH (...) of a graph")
    args = parser.parse_args()
    output = REPO / "bench" / f"hnsw-trial-{args.photos}.json"
    results: dict[str, Any] = {"photos": args.photos}
    with tempfile.TemporaryDirectory(prefix="photoembed-scale-") as tmp, Stack(Path(tmp)) as stack:
        url = libpq_url(stack.database_url)
        library = seed_library(url, args.photos, clip_model=MODEL, face_model="trial-faces")
        rng = np.random.default_rng(1)
        queries = [int(i) for i in rng.choice(library.photos, 400, replace=False)]
        with psycopg.connect(url, autocommit=True) as conn:
            for options in ["migrations", *args.options]:
                if options == "migrations":
                    build = library.index_seconds[INDEX]
                    definition = conn.execute(
                        "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (INDEX,)
                    ).fetchone()
                    print(f"{definition}: built in {build} s", flush=True)
                else:
                    conn.execute(f"DROP INDEX {INDEX}")
                    began = time.perf_counter()
                    conn.execute(
                        f"CREATE INDEX {INDEX} ON embeddings USING hnsw "
                        f"((vector::halfvec(512)) halfvec_cosine_ops) WITH ({options}) "
                        "WHERE dim = 512"
                    )
                    build = round(time.perf_counter() - began, 1)
                    print(f"{options}: built in {build} s", flush=True)
                size = conn.execute("SELECT pg_relation_size(%s)", (INDEX,)).fetchone()
                results[options] = {
                    "build_s": build,
                    "index_mb": round((size[0] if size else 0) / 2**20, 1),
                    "sweep": [sweep(conn, library, queries, ef, fetch) for ef, fetch in TRIALS],
                    "vector_writes": vector_writes(stack.database_url, MODEL, library),
                }
                output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
