"""`make bench-scale`: the product at library size, on this machine.

Seeds N READY photos with vectors, faces and persons by COPY (bench/seeding.py) into the embedded
Postgres that `make run` uses, with its settings, then measures:

* the HNSW index builds (time, size) and the recall of the photo search against brute force over
  400 or more query photos for several `hnsw.ef_search` values, through `search_similar` in SQL
  (the halfvec index of migrations 0011-0012, its 40 nearest ranked again by the stored vectors;
  no query photo is named, so no wider scan), and the same for a float32 index built beside it
  at the default ef_search;
* the worker's write at library size: one photo's row and vector a transaction;
* through the real API (one request at a time, after a warm-up): p50/p95/max of the search by
  photo (with recall@20 against brute force, mean and worst), by text (first time and cached), by
  person (their faces), with `filter_person_id`, and of listing photos (first page and deep cursor)
  and persons;
* `photoembed faces recluster` over all faces: its time, the longest any other transaction waited
  for the grouping lock meanwhile, and how many faces ended with another person than seeded;
* the API's and Postgres' memory.

Writes bench/scale-<N>.json and prints a table for docs/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import psycopg
from pgvector.psycopg import register_vector
from run import REPO, Stack, _libpq_url, client_for, start_api

from photoembed.api.active_model import identity_in_child
from photoembed.api.pagination import encode_cursor
from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.devstack import settings_env
from photoembed.faces.factory import face_model
from photoembed.search import QueryVector, ScanSettings, search_similar
from photoembed.seeding import SeededLibrary, seed_library

LIMIT = 20
TEXTS = [
    "a person in a red shirt", "two friends at the beach", "an old man smiling", "a child",
    "a woman with glasses", "wedding photo", "person on a bicycle", "a crowd at a concert",
    "portrait in black and white", "someone hiking in the mountains",
]  # fmt: skip


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 1),
        "max_ms": round(ordered[-1], 1),
        "n": len(ordered),
    }


def exact_top(library: SeededLibrary, vector: np.ndarray, k: int) -> set[uuid.UUID]:
    similarity = library.photo_vectors @ vector
    best = np.argpartition(-similarity, k)[:k]
    return {library.photo_ids[i] for i in best}


def recall_summary(recalls: list[float]) -> dict[str, Any]:
    return {
        "mean": round(float(np.mean(recalls)), 4),
        "worst": round(float(np.min(recalls)), 3),
        "below_0_8": int(sum(r < 0.8 for r in recalls)),
        "queries": len(recalls),
    }


def ef_sweep(
    database_url: str,
    library: SeededLibrary,
    model: str,
    queries: list[int],
    values: list[int],
) -> list[dict[str, Any]]:
    """Recall and latency of the HNSW index alone at each ef_search, in SQL."""
    rows = []
    for ef in values:
        recalls, times = [], []
        for i in queries:
            vector = library.photo_vectors[i]
            with session_scope(database_url) as session:
                began = time.perf_counter()
                hits = search_similar(
                    session,
                    QueryVector(vector.tolist(), model),
                    limit=LIMIT,
                    scan=ScanSettings(ef_search=ef),
                )
                times.append((time.perf_counter() - began) * 1000)
            truth = exact_top(library, vector, LIMIT)
            recalls.append(len(truth & {hit.photo_id for hit in hits}) / LIMIT)
        rows.append({"ef_search": ef, "recall": recall_summary(recalls), **percentiles(times)})
        print(f"  ef_search {ef}: {rows[-1]}", flush=True)
    return rows


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


def float32_trial(
    database_url: str, library: SeededLibrary, model: str, queries: list[int], ef: int
) -> dict[str, Any]:
    """The photo index the product used before halfvec (migration 0011), built beside it on the
    same library: build time, size, recall and latency at the same ef_search; dropped after."""
    url = _libpq_url(database_url)
    with psycopg.connect(url, autocommit=True) as conn:
        began = time.perf_counter()
        conn.execute(
            "CREATE INDEX ix_trial_vector_512 ON embeddings "
            "USING hnsw ((vector::vector(512)) vector_cosine_ops) WHERE dim = 512"
        )
        build = time.perf_counter() - began
        size = conn.execute("SELECT pg_relation_size('ix_trial_vector_512')").fetchone()
        recalls, times = sql_recall(
            conn,
            library,
            queries,
            ef,
            "SELECT e.photo_id FROM embeddings e JOIN photos p ON p.id = e.photo_id "
            "WHERE e.dim = 512 AND e.model = %(model)s AND p.status = 'READY' "
            "ORDER BY (e.vector::vector(512)) <=> CAST(%(q)s AS vector(512)) LIMIT %(limit)s",
            {"model": model, "limit": LIMIT},
        )
        conn.execute("DROP INDEX ix_trial_vector_512")
    result = {
        "ef_search": ef,
        "build_s": round(build, 1),
        "index_mb": round((size[0] if size else 0) / 2**20, 1),
        "recall": recall_summary(recalls),
        **percentiles(times),
    }
    print(f"  float32 index: {result}", flush=True)
    return result


def vector_writes(database_url: str, model: str, count: int = 300) -> dict[str, Any]:
    """The worker's write at library size: one photo's row and 512-d vector a transaction (the
    HNSW insert is the part that grows with the library); removed after."""
    rng = np.random.default_rng(7)
    times, ids = [], []
    with psycopg.connect(_libpq_url(database_url), autocommit=True) as conn:
        register_vector(conn)
        for n in range(count):
            photo_id = uuid.uuid4()
            vector = rng.standard_normal(512).astype(np.float32)
            vector /= np.linalg.norm(vector)
            began = time.perf_counter()
            with conn.transaction():
                conn.execute(
                    "INSERT INTO photos (id, status, storage_key, content_hash, content_type,"
                    " size_bytes, width, height, quality_score, image_quality, quality_version,"
                    " attempts, submitted_at, processed_at, created_at, updated_at, faces_status,"
                    " face_count, faces_attempts) VALUES (%s, 'READY', %s, %s, 'image/jpeg',"
                    " 1, 640, 480, 0.5, 0.5, 2, 1, now(), now(), now(), now(), 'DONE', 0, 1)",
                    (photo_id, f"w{n:063x}", f"w{n:063x}"),
                )
                conn.execute(
                    "INSERT INTO embeddings (photo_id, model, backend, model_name, pretrained,"
                    " quick_gelu, dim, vector, decode_version, created_at)"
                    " VALUES (%s, %s, 'open_clip', 'ViT-B-32', 'openai', true, 512, %s, 1, now())",
                    (photo_id, model, vector),
                )
            times.append((time.perf_counter() - began) * 1000)
            ids.append(photo_id)
        conn.execute("DELETE FROM embeddings WHERE photo_id = ANY(%s)", (ids,))
        conn.execute("DELETE FROM photos WHERE id = ANY(%s)", (ids,))
    result = percentiles(times)
    print(f"  a photo's vector stored: {result}", flush=True)
    return result


def timed_post(client: Any, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    began = time.perf_counter()
    response = client.post("/search", json=body)
    elapsed = (time.perf_counter() - began) * 1000
    response.raise_for_status()
    return elapsed, response.json()


def timed_get(client: Any, path: str, params: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    began = time.perf_counter()
    response = client.get(path, params=params)
    elapsed = (time.perf_counter() - began) * 1000
    response.raise_for_status()
    return elapsed, response.json()


def through_api(
    settings: Settings, library: SeededLibrary, queries: list[int], rng: np.random.Generator
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with client_for(settings) as client:
        for i in queries[:20]:  # warm-up: connections, plans, index pages
            timed_post(client, {"photo_id": str(library.photo_ids[i]), "limit": LIMIT})
        times, recalls = [], []
        for i in queries:
            elapsed, answer = timed_post(
                client, {"photo_id": str(library.photo_ids[i]), "limit": LIMIT}
            )
            times.append(elapsed)
            truth = exact_top(library, library.photo_vectors[i], LIMIT)
            found = {uuid.UUID(hit["photo_id"]) for hit in answer["results"]}
            recalls.append(len(truth & found) / LIMIT)
        results["search_photo"] = {**percentiles(times), "recall": recall_summary(recalls)}
        print(f"  search by photo: {results['search_photo']}", flush=True)

        texts = [f"{text} #{n}" for n in range(10) for text in TEXTS]
        timed_post(client, {"text": "warm-up", "limit": LIMIT})
        first = [timed_post(client, {"text": text, "limit": LIMIT})[0] for text in texts]
        again = [timed_post(client, {"text": text, "limit": LIMIT})[0] for text in texts]
        results["search_text"] = percentiles(first)
        results["search_text_cached"] = percentiles(again)
        print(f"  search by text: {results['search_text']}, cached {percentiles(again)}")

        persons = [library.person_ids[int(i)] for i in rng.choice(library.persons, 100)]
        person_times, person_hits = [], []
        for person in persons:
            elapsed, answer = timed_post(client, {"person_id": str(person), "limit": LIMIT})
            person_times.append(elapsed)
            person_hits.append(len(answer["results"]))
        results["search_person"] = {
            **percentiles(person_times),
            "by": answer["by"],
            "mean_results": float(np.mean(person_hits)),
        }
        print(f"  search by person: {results['search_person']}", flush=True)

        filtered_times, filtered_hits = [], []
        for person, i in zip(persons[:50], queries, strict=False):
            elapsed, answer = timed_post(
                client,
                {"photo_id": str(library.photo_ids[i]), "limit": LIMIT,
                 "filter_person_id": str(person)},
            )  # fmt: skip
            filtered_times.append(elapsed)
            filtered_hits.append(len(answer["results"]))
        results["search_filter_person"] = {
            **percentiles(filtered_times),
            "min_results": min(filtered_hits),
        }
        print(f"  filter_person_id: {results['search_filter_person']}", flush=True)

        first_page = [timed_get(client, "/photos", {"limit": 50})[0] for _ in range(50)]
        deep = []
        for _ in range(50):
            row = int(rng.integers(0, library.photos))
            created = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=row)
            cursor = encode_cursor(created, library.photo_ids[row])
            deep.append(timed_get(client, "/photos", {"limit": 50, "cursor": cursor})[0])
        results["list_photos"] = percentiles(first_page)
        results["list_photos_deep"] = percentiles(deep)
        results["list_persons"] = percentiles(
            [timed_get(client, "/persons", {"limit": 50})[0] for _ in range(50)]
        )
        print(
            f"  lists: photos {results['list_photos']}, deep {results['list_photos_deep']}, "
            f"persons {results['list_persons']}",
            flush=True,
        )
    return results


class LockWatch(threading.Thread):
    """Takes the grouping lock as a face being grouped would, every 0.2 s, and keeps the longest
    wait."""

    def __init__(self, libpq_url: str) -> None:
        super().__init__(daemon=True)
        self.url = libpq_url
        self.longest = 0.0
        self.tries = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url) as conn:
            while not self.stop.is_set():
                began = time.perf_counter()
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext('photoembed:faces'))")
                self.longest = max(self.longest, time.perf_counter() - began)
                self.tries += 1
                time.sleep(0.2)


def recluster(settings: Settings, stack: Stack) -> dict[str, Any]:
    url = _libpq_url(stack.database_url)
    with psycopg.connect(url) as conn:
        before = dict(conn.execute("SELECT id, person_id FROM faces").fetchall())
    watch = LockWatch(url)
    watch.start()
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "photoembed.cli", "faces", "recluster"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - began
    watch.stop.set()
    watch.join()
    if done.returncode != 0:
        raise SystemExit(f"recluster failed:\n{done.stderr[-3000:]}")
    with psycopg.connect(url) as conn:
        after = dict(conn.execute("SELECT id, person_id FROM faces").fetchall())
    moved = sum(1 for face, person in after.items() if before.get(face) != person)
    result = {
        "seconds": round(seconds, 1),
        "longest_lock_wait_s": round(watch.longest, 2),
        "lock_tries": watch.tries,
        "faces": len(after),
        "faces_moved": moved,
        "output": done.stdout.strip().splitlines()[-1:],
    }
    print(f"  recluster: {result}", flush=True)
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


def sizes(stack: Stack) -> dict[str, float]:
    with psycopg.connect(_libpq_url(stack.database_url)) as conn:
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
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--ef", default="40,64,100,200", help="ef_search values to sweep")
    parser.add_argument("--no-recluster", action="store_true")
    parser.add_argument(
        "--no-float32", action="store_true", help="skip the float32 index built for comparison"
    )
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    output = args.output or REPO / "bench" / f"scale-{args.photos}.json"
    rng = np.random.default_rng(1)
    started = time.perf_counter()
    results: dict[str, Any] = {"photos": args.photos}
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
        print(f"seeding {args.photos} photos ...", flush=True)
        library = seed_library(
            _libpq_url(stack.database_url),
            args.photos,
            clip_model=clip_model,
            face_model=face_identity,
        )
        results["seed"] = {
            "photos": library.photos,
            "faces": library.faces,
            "persons": library.persons,
            "copy_s": library.copy_seconds,
            "index_build_s": library.index_seconds,
        }
        results["sizes"] = sizes(stack)
        print(f"  {results['seed']}\n  {results['sizes']}", flush=True)
        queries = [int(i) for i in rng.choice(library.photos, args.queries, replace=False)]
        results["ef_sweep"] = ef_sweep(
            stack.database_url,
            library,
            clip_model,
            queries,
            [int(v) for v in args.ef.split(",")],
        )
        if not args.no_float32:
            results["float32_index"] = float32_trial(
                stack.database_url, library, clip_model, queries, ScanSettings().ef_search
            )
        results["vector_writes"] = vector_writes(stack.database_url, clip_model)
        api = start_api(stack, settings, "api-scale", running)
        assert api.process is not None
        results["api"] = through_api(settings, library, queries, rng)
        results["memory"] = memory(api.process.pid, stack.postgres.data_dir)
        if not args.no_recluster:
            results["recluster"] = recluster(settings, stack)
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
