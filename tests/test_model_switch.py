"""Switching models without losing search: upload under model A, switch to model B, backfill
(killed half-way, then resumed), search under B with every photo present."""

from __future__ import annotations

import signal

import httpx
import psycopg
import pytest

from photoembed.clip.backends import active_identity
from photoembed.clip.weights_files import write_random_weights
from tests.conftest import TEST_API_KEY
from tests.helpers import encode, make_photo, wait_for_status, wait_until

pytestmark = pytest.mark.slow


def _vectors_of(settings, model: str) -> int:
    with psycopg.connect(settings.database_url.replace("postgresql+psycopg", "postgresql")) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM embeddings WHERE model = %s", (model,)
        ).fetchone()
    return int(count)


def _client(settings) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{settings.api_port}",
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        timeout=60,
    )


def _embedded(
    settings, start_service, client: httpx.Client, uploads: dict[str, bytes]
) -> list[str]:
    """Upload through a real API to a real worker, wait until every photo is READY, stop both."""
    api = start_service("api", settings)
    api.wait_for_log("Uvicorn running on", timeout=60)
    worker = start_service("worker", settings)
    worker.wait_for_log("selfcheck.passed")
    ids = [client.post("/photos", files={"file": (n, d)}).json()["id"] for n, d in uploads.items()]
    for photo_id in ids:
        assert wait_for_status(client, photo_id, {"READY", "FAILED"})["status"] == "READY"
    worker.stop()
    api.stop()
    return ids


def test_switch_model_backfill_resume_and_search_under_the_new_model(
    own_database, start_service, tmp_path
):
    settings_a = own_database
    # given photos embedded under model A
    client = _client(settings_a)
    uploads = {f"{s}.jpg": encode(make_photo(s, (400, 300))) for s in range(600, 624)}
    ids = _embedded(settings_a, start_service, client, uploads)

    # when the configuration switches to model B (other weights)
    weights_b = tmp_path / "model-b.bin"
    write_random_weights(weights_b, "ViT-B-32", quick_gelu=True, seed=1)
    settings_b = settings_a.model_copy(update={"clip_pretrained": str(weights_b)})
    model_b = active_identity(settings_b)

    dry = start_service("backfill", settings_b, "--dry-run")
    assert dry.wait() == 0 and f"24 photo(s) have no vector of {model_b} made by" in dry.log

    # and the backfill is killed half-way, then run again
    first = start_service("backfill", settings_b, "--batch-size", "2")
    wait_until(lambda: _vectors_of(settings_b, model_b) >= 4, timeout=180, interval=0.05)
    first.stop(signal.SIGKILL)
    partial = _vectors_of(settings_b, model_b)
    assert 0 < partial < 24, f"the kill came too late to test resuming ({partial} of 24 done)"
    second = start_service("backfill", settings_b, "--batch-size", "8")
    assert second.wait(timeout=300) == 0, second.log
    assert "backfill.progress" in second.log

    # then every photo has exactly one vector of B, and its A vector too
    assert _vectors_of(settings_b, model_b) == 24
    with psycopg.connect(
        settings_b.database_url.replace("postgresql+psycopg", "postgresql")
    ) as conn:
        per_photo = conn.execute(
            "SELECT photo_id, count(*) FROM embeddings GROUP BY photo_id"
        ).fetchall()
    assert len(per_photo) == 24 and {count for _, count in per_photo} == {2}

    # and search under B finds every photo, with B's vectors
    api_b = start_service("api", settings_b)
    api_b.wait_for_log("Uvicorn running on", timeout=60)
    client_b = _client(settings_b)
    results = client_b.post("/search", data={"photo_id": ids[0], "limit": "100"}).json()
    assert results["model"] == model_b
    assert {hit["photo_id"] for hit in results["results"]} == set(ids)
    assert results["results"][0]["photo_id"] == ids[0]
    assert client_b.get(f"/photos/{ids[3]}/embedding").json()["model"] == model_b
    api_b.stop()

    # and an API still configured with A searches A's vectors (the active model decides, not age)
    model_a = active_identity(settings_a)
    api_a_again = start_service("api", settings_a)
    api_a_again.wait_for_log("Uvicorn running on", timeout=60)
    under_a = client.post("/search", data={"photo_id": ids[0], "limit": "100"}).json()
    assert under_a["model"] == model_a != model_b
    assert {hit["photo_id"] for hit in under_a["results"]} == set(ids)
    api_a_again.stop()

    # and with --enqueue, workers already running a model C do the backfill from Redis messages
    weights_c = tmp_path / "model-c.bin"
    write_random_weights(weights_c, "ViT-B-32", quick_gelu=True, seed=2)
    settings_c = settings_a.model_copy(update={"clip_pretrained": str(weights_c)})
    model_c = active_identity(settings_c)
    worker_c = start_service("worker", settings_c)
    worker_c.wait_for_log("selfcheck.passed")
    assert start_service("backfill", settings_c, "--enqueue").wait() == 0
    wait_until(lambda: _vectors_of(settings_c, model_c) == 24, timeout=180)
    assert "photo.backfilled" in worker_c.log
    print(
        f"backfill: killed at {partial}/24, resumed to 24/24; model B = {model_b}; enqueued C 24/24"
    )


def _stored(settings) -> dict[str, tuple[list[float], int, str | None]]:
    with psycopg.connect(settings.database_url.replace("postgresql+psycopg", "postgresql")) as conn:
        rows = conn.execute(
            "SELECT photo_id::text, vector::text, decode_version, decode_mode FROM embeddings"
        ).fetchall()
    return {
        photo_id: ([float(v) for v in vector.strip("[]").split(",")], version, mode)
        for photo_id, vector, version, mode in rows
    }


def test_backfill_refreshes_vectors_made_by_an_older_decode(own_database, start_service):
    settings = own_database
    # given photos embedded by today's worker, each vector recording its decode
    client = _client(settings)
    uploads = {f"{s}.png": encode(make_photo(s, (900, 600)), "PNG") for s in range(700, 706)}
    ids = _embedded(settings, start_service, client, uploads)
    served = _stored(settings)
    assert {(version, mode) for _, version, mode in served.values()} == {(2, "exact")}

    # and three of them as migration 0007 leaves vectors stored before it: version 1, moved ~1e-3
    old = ids[:3]
    with psycopg.connect(settings.database_url.replace("postgresql+psycopg", "postgresql")) as conn:
        for photo_id in old:
            moved = [v + 1e-3 for v in served[photo_id][0]]
            conn.execute(
                "UPDATE embeddings SET decode_version = 1, decode_mode = NULL, "
                "vector = %s::vector WHERE photo_id = %s",
                (str(moved), photo_id),
            )

    # when the backfill is asked what it would do, then run
    dry = start_service("backfill", settings, "--dry-run")
    assert dry.wait() == 0 and "3 photo(s) have no vector of" in dry.log, dry.log
    assert start_service("backfill", settings).wait(timeout=300) == 0

    # then exactly those three were embedded again, with today's decode, back to the served vector
    refreshed = _stored(settings)
    assert len(refreshed) == len(ids)  # refreshed in place: still one vector per photo and model
    for photo_id in ids:
        vector, version, mode = refreshed[photo_id]
        assert (version, mode) == (2, "exact")
        assert max(abs(a - b) for a, b in zip(vector, served[photo_id][0], strict=True)) < 1e-6
    again = start_service("backfill", settings, "--dry-run")
    assert again.wait() == 0 and "0 photo(s) have no vector of" in again.log
