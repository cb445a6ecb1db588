"""`make bench-scale`'s measurements through the real API, one library at a time with a key of that
library (read scope), as a customer's product calls it: search by photo (recall@20 against brute
force over the library's own vectors), by text (each text new: no query cache), by person (their
faces), with `filter_person_id`, and the lists. Requests go one at a time after a warm-up."""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np

from photoembed.api.pagination import encode_cursor
from photoembed.api.queries import QueryEmbedder
from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.libraries import create_key
from photoembed.models import Scope
from photoembed.search import QueryVector, ScanSettings, search_similar
from photoembed.seeding import SeededLibrary

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
    """The library's `k` photos nearest to `vector`, by brute force (all of them if fewer)."""
    similarity = library.photo_vectors @ vector
    if k >= library.photos:
        return set(library.photo_ids)
    best = np.argpartition(-similarity, k)[:k]
    return {library.photo_ids[i] for i in best}


def recall_summary(recalls: list[float]) -> dict[str, Any]:
    return {
        "mean": round(float(np.mean(recalls)), 4),
        "worst": round(float(np.min(recalls)), 3),
        "below_0_8": int(sum(r < 0.8 for r in recalls)),
        "queries": len(recalls),
    }


def library_key(database_url: str, library: SeededLibrary, *scopes: Scope) -> str:
    """A new key of the library with `scopes` (straight on the database, as `photoembed keys
    create` makes one)."""
    with session_scope(database_url) as session:
        made = create_key(session, library.library_id, list(scopes), label="bench-scale")
    return made.secret


def query_photos(library: SeededLibrary, count: int, rng: np.random.Generator) -> list[int]:
    """`count` query photos of the library: each once, then again while more are asked for."""
    order = [int(i) for i in rng.permutation(library.photos)]
    return [order[i % len(order)] for i in range(count)]


def sql_ef_sweep(
    database_url: str, library: SeededLibrary, model: str, queries: list[int], values: list[int]
) -> list[dict[str, Any]]:
    """Recall and latency of `search_similar` in SQL through the HNSW index (never the exact
    plan) at each ef_search, within the library."""
    rows = []
    for ef in values:
        recalls, times = [], []
        for i in queries:
            vector = library.photo_vectors[i]
            with session_scope(database_url) as session:
                began = time.perf_counter()
                hits = search_similar(
                    session,
                    library.library_id,
                    QueryVector(vector.tolist(), model),
                    limit=LIMIT,
                    scan=ScanSettings(ef_search=ef, exact_max=0),
                )
                times.append((time.perf_counter() - began) * 1000)
            truth = exact_top(library, vector, LIMIT)
            recalls.append(len(truth & {hit.photo_id for hit in hits}) / len(truth))
        rows.append({"ef_search": ef, "recall": recall_summary(recalls), **percentiles(times)})
        print(f"  ef_search {ef}: {rows[-1]}", flush=True)
    return rows


def _timed(client: httpx.Client, method: str, path: str, **kwargs: Any) -> tuple[float, Any]:
    began = time.perf_counter()
    response = client.request(method, path, **kwargs)
    elapsed = (time.perf_counter() - began) * 1000
    response.raise_for_status()
    return elapsed, response.json()


def through_api(
    settings: Settings,
    key: str,
    library: SeededLibrary,
    number: int,
    queries: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Every search and list of one library through the API with the library's own key."""
    results: dict[str, Any] = {"photos": library.photos, "faces": library.faces}
    picked = query_photos(library, queries, rng)
    with httpx.Client(
        base_url=f"http://127.0.0.1:{settings.api_port}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    ) as client:

        def search(body: dict[str, Any]) -> tuple[float, Any]:
            return _timed(client, "POST", "/search", json={"limit": LIMIT, **body})

        for i in picked[:20]:  # warm-up: connections, plans, index pages
            search({"photo_id": str(library.photo_ids[i])})
        times, recalls = [], []
        for i in picked:
            elapsed, answer = search({"photo_id": str(library.photo_ids[i])})
            times.append(elapsed)
            truth = exact_top(library, library.photo_vectors[i], LIMIT)
            found = {uuid.UUID(hit["photo_id"]) for hit in answer["results"]}
            recalls.append(len(truth & found) / len(truth))
        results["search_photo"] = {**percentiles(times), "recall": recall_summary(recalls)}

        # each text new, here and in every other library: the API's query cache never answers
        texts = [f"{text} #{number}-{n}" for n in range(5) for text in TEXTS]
        results["search_text"] = percentiles([search({"text": text})[0] for text in texts])

        persons = [library.person_ids[int(i)] for i in rng.choice(library.persons, 100)]
        person_times = [search({"person_id": str(person)})[0] for person in persons]
        results["search_person"] = percentiles(person_times)

        filtered = [
            search({"photo_id": str(library.photo_ids[i]), "filter_person_id": str(person)})[0]
            for person, i in zip(persons[:50], picked, strict=False)
        ]
        results["search_filter_person"] = percentiles(filtered)

        first = [_timed(client, "GET", "/photos", params={"limit": 50})[0] for _ in range(30)]
        deep = []
        for _ in range(30):
            row = int(rng.integers(0, library.photos))
            cursor = encode_cursor(library.created[row], library.photo_ids[row])
            deep.append(_timed(client, "GET", "/photos", params={"limit": 50, "cursor": cursor})[0])
        results["list_photos"] = percentiles(first)
        results["list_photos_deep"] = percentiles(deep)
        results["list_persons"] = percentiles(
            [_timed(client, "GET", "/persons", params={"limit": 50})[0] for _ in range(30)]
        )
    print(f"  {library.name} ({library.photos} photos): {_short(results)}", flush=True)
    return results


def _short(results: dict[str, Any]) -> str:
    return ", ".join(
        f"{name} p95 {value['p95_ms']}"
        + (f" recall {value['recall']['mean']}" if "recall" in value else "")
        for name, value in results.items()
        if isinstance(value, dict) and "p95_ms" in value
    )


def text_tower(settings: Settings, count: int = 100) -> dict[str, Any]:
    """The text tower alone, in this process as in the API (ONNX Runtime, the API's threads):
    what part of a text search is the model's."""
    embedder = QueryEmbedder(settings)
    embedder.embed_text("warm-up")
    stamp = datetime.now(UTC).isoformat()
    times = []
    for n in range(count):
        began = time.perf_counter()
        embedder.embed_text(f"{TEXTS[n % len(TEXTS)]} {stamp} {n}")
        times.append((time.perf_counter() - began) * 1000)
    return percentiles(times)
