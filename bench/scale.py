"""`make bench-scale`: the product at library size, many customers on one Postgres, on this machine.

Seeds N READY photos with vectors, faces and persons by COPY (services/photoembed/seeding.py) into
the embedded Postgres that `make run` uses, with its settings, spread over L libraries (default
100,000 over 1,000: one of 30,000, the others sized by a power law from 10 to 20,000; `--libraries
1` puts them all in one), then measures:

* the HNSW index builds (time, size), and the recall of the photo search within the largest
  library through the index (never the exact plan) at several `hnsw.ef_search` values, in SQL;
* the worker's write at library size: one photo's row and vector a transaction;
* through the real API, with each measured library's own key (read scope): search by photo
  (recall@20 against brute force over the library's vectors), by text (each text new), by person
  (their faces), with `filter_person_id`, and the lists, for the smallest, the median, a middle,
  and the three largest libraries; the text tower alone, to split a text search;
* `photoembed faces recluster --library` of a library of R faces all unplaced (seeded after the
  searches, without CLIP vectors), while a real worker groups photos uploaded into it meanwhile:
  its time, the longest wait for its grouping lock and for another library's, and how long each
  upload waited to be grouped;
* the API's and Postgres' memory.

Writes bench/scale-<N>.json and prints what docs/scale.md shows.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from contextlib import ExitStack, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import psycopg
from harness import REPO, Stack, libpq_url, start_api
from pgvector.psycopg import register_vector
from scale_recluster import recluster_while_uploading, seed_unplaced
from scale_search import library_key, percentiles, sql_ef_sweep, text_tower, through_api

from photoembed.api.active_model import identity_in_child
from photoembed.faces.factory import face_model
from photoembed.models import Scope
from photoembed.seeding import SeededLibrary, seed_libraries


def tenant_sizes(photos: int, libraries: int, largest: int, seed: int = 5) -> list[int]:
    """One library of `largest` photos, one of 20,000 (at most half of the rest), and the rest
    drawn from a power law (density ~ size^-2) between 10 and that, scaled to add up."""
    if libraries == 1:
        return [photos]
    top = min(20_000, (photos - largest) // 2)
    rest = photos - largest - top
    u = np.random.default_rng(seed).random(libraries - 2)
    draws = 1 / (1 / 10 - u * (1 / 10 - 1 / top))
    sizes = np.clip(np.round(draws * rest / draws.sum()), 10, top).astype(int)
    sizes[np.argmax(sizes)] += rest - int(sizes.sum())
    return [largest, top, *sorted(sizes.tolist(), reverse=True)]


def measured(libraries: list[SeededLibrary]) -> dict[str, SeededLibrary]:
    """The libraries measured through the API: the smallest, the median, one at the hundredth
    place (a middle one), and the three largest."""
    ranked = sorted(libraries, key=lambda lib: lib.photos, reverse=True)
    picks = {
        "largest": ranked[0],
        "second": ranked[1] if len(ranked) > 1 else None,
        "third": ranked[2] if len(ranked) > 2 else None,
        "middle": ranked[min(len(ranked) - 1, len(ranked) // 10)] if len(ranked) > 3 else None,
        "median": ranked[len(ranked) // 2] if len(ranked) > 3 else None,
        "smallest": ranked[-1] if len(ranked) > 1 else None,
    }
    return {label: lib for label, lib in picks.items() if lib is not None}


def vector_writes(
    database_url: str, model: str, library: SeededLibrary, count: int = 300
) -> dict[str, Any]:
    """The worker's write at library size: one photo's row and 512-d vector a transaction (the
    HNSW insert is the part that grows with the library); removed after."""
    rng = np.random.default_rng(7)
    times, ids = [], []
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        register_vector(conn)
        for n in range(count):
            photo_id = uuid.uuid4()
            vector = rng.standard_normal(512).astype(np.float32)
            vector /= np.linalg.norm(vector)
            began = time.perf_counter()
            with conn.transaction():
                conn.execute(
                    "INSERT INTO photos (id, library_id, status, storage_key, content_hash,"
                    " content_type, size_bytes, width, height, quality_score, image_quality,"
                    " quality_version, attempts, submitted_at, processed_at, created_at,"
                    " updated_at, faces_status, face_count, faces_attempts) VALUES (%s, %s,"
                    " 'READY', %s, %s, 'image/jpeg', 1, 640, 480, 0.5, 0.5, 2, 1, now(), now(),"
                    " now(), now(), 'DONE', 0, 1)",
                    (photo_id, library.library_id, f"w{n:063x}", f"w{n:063x}"),
                )
                conn.execute(
                    "INSERT INTO embeddings (photo_id, library_id, model, backend, model_name,"
                    " pretrained, quick_gelu, dim, vector, decode_version, created_at)"
                    " VALUES (%s, %s, %s, 'open_clip', 'ViT-B-32', 'openai', true, 512, %s, 1,"
                    " now())",
                    (photo_id, library.library_id, model, vector),
                )
            times.append((time.perf_counter() - began) * 1000)
            ids.append(photo_id)
        conn.execute("DELETE FROM photos WHERE id = ANY(%s)", (ids,))
    result = percentiles(times)
    print(f"  a photo's vector stored: {result}", flush=True)
    return result


def memory(api_pid: int, postgres_dir: Path) -> dict[str, float]:
    def tree_mb(root: psutil.Process, field: str) -> float:
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            with suppress(psutil.Error):
                total += getattr(process.memory_full_info(), field)
        return round(total / 2**20, 1)

    postmaster = int((postgres_dir / "postmaster.pid").read_text().split()[0])
    return {
        "api_rss_mb": tree_mb(psutil.Process(api_pid), "rss"),
        "postgres_pss_mb": tree_mb(psutil.Process(postmaster), "pss"),
    }


def sizes(stack: Stack) -> dict[str, Any]:
    with psycopg.connect(libpq_url(stack.database_url)) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c "
            "WHERE c.relname IN ('photos', 'embeddings', 'faces') "
            "OR c.relname LIKE 'ix_embeddings_%vec%' OR c.relname LIKE 'faces_vector_%'"
        ).fetchall()
        settings = dict(
            conn.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
                "('shared_buffers', 'maintenance_work_mem', 'work_mem', 'effective_cache_size',"
                " 'max_parallel_maintenance_workers')"
            ).fetchall()
        )
    return {"mb": {name: round(size / 2**20, 1) for name, size in rows}, "postgres": settings}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--libraries", type=int, default=1000)
    parser.add_argument("--largest", type=int, default=30_000, help="the largest library")
    parser.add_argument("--queries", type=int, default=400, help="photo searches a library")
    parser.add_argument("--ef", default="40,100,200", help="ef_search values to sweep")
    parser.add_argument(
        "--recluster-faces", type=int, default=100_000, help="0: no recluster measured"
    )
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    output = args.output or REPO / "bench" / f"scale-{args.photos}.json"
    rng = np.random.default_rng(1)
    started = time.perf_counter()
    results: dict[str, Any] = {"photos": args.photos, "libraries": args.libraries}
    with (
        tempfile.TemporaryDirectory(prefix="photoembed-scale-") as tmp,
        Stack(Path(tmp)) as stack,
        ExitStack() as running,
    ):
        settings = stack.settings(faces_enabled=True)
        clip_model = identity_in_child(settings)
        if clip_model is None:
            raise SystemExit("the model's identity is unknown: see the log above")
        face_identity = face_model(settings).load().identity
        url = libpq_url(stack.database_url)
        counts = tenant_sizes(args.photos, args.libraries, min(args.largest, args.photos))
        print(f"seeding {args.photos} photos in {len(counts)} libraries ...", flush=True)
        libraries = seed_libraries(
            url, counts, clip_model=clip_model, face_model=face_identity, use_default=True
        )
        results["seed"] = {
            "photos": sum(lib.photos for lib in libraries),
            "faces": sum(lib.faces for lib in libraries),
            "persons": sum(lib.persons for lib in libraries),
            "library_sizes": {
                "largest": counts[:3],
                "median": int(np.median(counts)),
                "at most 100": sum(1 for c in counts if c <= 100),
            },
            "copy_s": libraries[0].copy_seconds,
            "index_build_s": libraries[0].index_seconds,
        }
        results["sizes"] = sizes(stack)
        print(f"  {results['seed']}\n  {results['sizes']}", flush=True)
        chosen = measured(libraries)
        largest = chosen["largest"]
        sweep = [int(i) for i in rng.choice(largest.photos, min(400, largest.photos), False)]
        results["ef_sweep_largest"] = sql_ef_sweep(
            stack.database_url, largest, clip_model, sweep, [int(v) for v in args.ef.split(",")]
        )
        results["vector_writes"] = vector_writes(stack.database_url, clip_model, largest)
        api = start_api(stack, settings, "api-scale", running)
        assert api.process is not None
        results["text_tower"] = text_tower(settings)
        print(f"  the text tower alone: {results['text_tower']}", flush=True)
        results["api"] = {
            label: {
                "library": library.name,
                **through_api(
                    settings,
                    library_key(stack.database_url, library, Scope.READ),
                    library,
                    number,
                    args.queries,
                    rng,
                ),
            }
            for number, (label, library) in enumerate(chosen.items())
        }
        results["memory"] = memory(api.process.pid, stack.postgres.data_dir)
        if args.recluster_faces:
            print(f"seeding a library of {args.recluster_faces} unplaced faces ...", flush=True)
            unplaced = seed_unplaced(
                url,
                args.recluster_faces,
                clip_model=clip_model,
                face_model=face_identity,
                first_photo=args.photos,
            )
            worker = stack.start("worker", settings, "worker-scale")
            running.callback(worker.stop)
            worker.wait_for_log("selfcheck.passed", timeout=600)
            upload_key = library_key(stack.database_url, unplaced, Scope.READ, Scope.UPLOAD)
            results["recluster"] = recluster_while_uploading(
                settings, upload_key, unplaced, chosen["second"], worker
            )
    results["run"] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
