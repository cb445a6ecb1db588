"""At-least-once delivery, killed workers and service outages, on real processes: nothing lost,
nothing embedded twice, nothing left PENDING or PROCESSING."""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from photoembed.config import Settings
from photoembed.devstack import ServiceProcess
from tests.conftest import start_api
from tests.helpers import (
    embeddings_per_photo,
    encode,
    make_photo,
    statuses,
    wait_until,
)

pytestmark = pytest.mark.slow

CRASH_MARKER = "photoembed-test-crash-here"
CRASH_HOOK = Path(__file__).parent / "crash_on_marker"


def _resilient(settings: Settings) -> Settings:
    """Short heartbeat, lease and sweep so that a test sees recovery in seconds, not minutes."""
    return settings.model_copy(
        update={
            "redis_heartbeat_timeout_ms": 3_000,
            "redis_maintenance_chance": 200_000,
            "claim_lease_seconds": 20,
            "sweep_interval_seconds": 3,
            "sweep_pending_grace_seconds": 5,
        }
    )


def _upload(api: httpx.Client, count: int, first_seed: int) -> list[str]:
    ids = []
    for seed in range(first_seed, first_seed + count):
        size = (320 + 40 * (seed % 5), 240 + 30 * (seed % 3))
        response = api.post(
            "/photos", files={"file": (f"{seed}.jpg", encode(make_photo(seed, size)))}
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def _all_ready(settings: Settings, ids: list[str], timeout: float) -> None:
    def done() -> bool:
        return set(statuses(settings.database_url, ids).values()) == {"READY"}

    try:
        wait_until(done, timeout=timeout, interval=1.0)
    except AssertionError:
        counts: dict[str, int] = {}
        for status in statuses(settings.database_url, ids).values():
            counts[status] = counts.get(status, 0) + 1
        raise AssertionError(f"not all READY after {timeout}s: {counts}") from None


def test_kill_9_mid_run_loses_nothing_and_embeds_nothing_twice(settings, api, start_service):
    settings = _resilient(settings)
    # given a backlog of 40 photos, a worker working through it
    ids = _upload(api, 40, first_seed=100)
    first = start_service("worker", settings)
    first.wait_for_log("selfcheck.passed")
    wait_until(
        lambda: list(statuses(settings.database_url, ids).values()).count("READY") >= 5, timeout=120
    )
    first.stop(signal.SIGKILL)  # the whole process group: dramatiq's parent and its worker
    # nothing moves until the next worker starts: this is what the kill left behind
    at_kill = list(statuses(settings.database_url, ids).values())
    unfinished = len(ids) - at_kill.count("READY")
    assert unfinished > 0, "every photo was READY before the kill: it proved nothing"

    second = start_service("worker", settings)
    second.wait_for_log("selfcheck.passed")
    _all_ready(settings, ids, timeout=240)

    per_photo = embeddings_per_photo(settings.database_url, ids)
    print(f"photos={len(ids)} unfinished at kill={unfinished} embeddings={sum(per_photo.values())}")
    assert sorted(per_photo) == sorted(ids)
    assert set(per_photo.values()) == {1}


def test_redis_then_postgres_outage_during_a_run_ends_with_every_photo_ready(
    settings, start_service, redis_server, postgres
):
    settings = _resilient(settings)
    api = start_api(settings, start_service)
    api_service = start_service.started[-1]
    worker = start_service("worker", settings)
    worker.wait_for_log("selfcheck.passed")

    # Redis goes away right after a batch is queued; uploads meanwhile are accepted, sent later
    ids = _upload(api, 15, first_seed=200)
    redis_server.stop()
    during_redis = _upload(api, 3, first_seed=300)
    time.sleep(5)
    redis_server.start()

    # then Postgres goes away while the next batch is being processed
    more = _upload(api, 10, first_seed=320)
    postgres.pg_ctl("stop")
    time.sleep(8)
    postgres.pg_ctl("start")

    everything = ids + during_redis + more
    _all_ready(settings, everything, timeout=300)
    per_photo = embeddings_per_photo(settings.database_url, everything)
    assert set(per_photo.values()) == {1} and len(per_photo) == len(everything)
    # and the outages really hit work in flight
    assert api_service.log.count("photo.enqueue_deferred") == 3
    assert "sweeper.resent" in worker.log
    assert "OperationalError" in worker.log
    print(
        f"photos={len(everything)} deferred_at_api=3 "
        f"worker_db_errors={worker.log.count('OperationalError')} "
        f"sweeps={worker.log.count('sweeper.resent')}"
    )


def test_the_api_answers_503_with_retry_after_while_postgres_is_down(
    settings, start_service, postgres
):
    # given the API serving lists and uploads
    api = start_api(settings, start_service)
    api_service = start_service.started[-1]
    assert api.get("/photos").status_code == 200
    # when Postgres stops
    postgres.pg_ctl("stop")
    try:
        listed = api.get("/photos")
        upload = api.post("/photos", files={"file": ("a.jpg", encode(make_photo(450)))})
    finally:
        postgres.pg_ctl("start")
    # then each is told to come back later (503, Retry-After, a reason), never a 500
    for answer in (listed, upload):
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["Retry-After"]) > 0
        assert "database" in answer.json()["detail"]
    assert "api.database_unavailable" in api_service.log
    # and once it is back the same API process serves again
    wait_until(lambda: api.get("/photos").status_code == 200, timeout=30, interval=0.5)


def test_a_photo_that_kills_its_worker_every_time_ends_failed_after_its_attempts(
    settings, api, start_service
):
    settings = _resilient(settings).model_copy(update={"max_attempts": 2})
    # given a photo whose decoding makes the worker process exit on the spot, every time
    # (tests/crash_on_marker: like a decoder's segfault or the OOM killer)
    picture = io.BytesIO()
    make_photo(400, (320, 240)).save(picture, format="JPEG", comment=CRASH_MARKER.encode())
    response = api.post("/photos", files={"file": ("crash.jpg", picture.getvalue())})
    assert response.status_code == 202, response.text
    photo_id = response.json()["id"]
    python_path = os.pathsep.join(filter(None, [str(CRASH_HOOK), os.environ.get("PYTHONPATH")]))

    # when workers keep being started (as compose's restart policy does) and keep dying on it
    deaths = 0
    for _ in range(settings.max_attempts + 2):
        worker = start_service(
            "worker", settings, PYTHONPATH=python_path, CRASH_MARKER=CRASH_MARKER
        )
        if _failed_or_died(api, photo_id, worker) == "died":
            deaths += 1
            continue
        break

    # then it ends FAILED with the reason once its attempts are spent, instead of for ever
    photo = api.get(f"/photos/{photo_id}").json()
    assert photo["status"] == "FAILED", photo
    assert deaths == settings.max_attempts, deaths
    assert "gave up after 2 attempts" in photo["error"]
    # and the worker that ended it is still running
    assert worker.process is not None and worker.process.poll() is None


def _failed_or_died(api: httpx.Client, photo_id: str, worker: ServiceProcess) -> str:
    """Wait until the photo is FAILED (or READY: nothing died) or the worker process has
    exited; which came first."""

    def outcome() -> str | None:
        assert worker.process is not None
        if worker.process.poll() is not None:
            return "died"
        status = api.get(f"/photos/{photo_id}").json()["status"]
        return status.lower() if status in ("FAILED", "READY") else None

    result: str = wait_until(outcome, timeout=240, interval=0.5)
    return result
