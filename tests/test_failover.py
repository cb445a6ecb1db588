"""Failovers under load, on real processes: Redis through three sentinels loses its master to a
SIGKILL, then Postgres loses its primary and the synchronous standby is promoted. Uploads are
answered 202 or 503 throughout, and every accepted photo ends READY exactly once."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from photoembed.cli.database import migrate
from photoembed.config import Settings
from photoembed.db import get_engine, session_scope
from photoembed.devstack import free_port
from photoembed.samples import encode, make_photo
from tests.conftest import TEST_API_KEY, Services, new_database, stack_settings, start_api
from tests.ha import PostgresWithStandby, RedisWithSentinels
from tests.helpers import statuses, wait_until

CLIENTS = 4
PHOTOS = 500
UPLOADS_PER_SECOND = 10.0  # all clients together: the upload runs about 50 s, both failovers in it
# what a failover manager (Patroni, a managed Postgres) takes to notice the primary gone
PROMOTE_AFTER_S = 2.0


@dataclass
class Answers:
    """What the clients saw, each answer with the monotonic time it came back."""

    accepted: list[tuple[float, str]] = field(default_factory=list)
    refused: list[tuple[float, int]] = field(default_factory=list)  # 503s, retried
    broken: list[str] = field(default_factory=list)  # any other status, or a dropped connection
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seconds_without_acceptance(self, since: float) -> float:
        """The longest wait between two accepted uploads from `since` on, `since` included."""
        times = sorted([since] + [t for t, _ in self.accepted if t > since])
        return round(max(b - a for a, b in itertools.pairwise(times)), 2)


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[tuple[RedisWithSentinels, PostgresWithStandby]]:
    redis_ha, postgres_ha = RedisWithSentinels(tmp_path / "redis"), PostgresWithStandby(tmp_path)
    try:
        redis_ha.start()
        postgres_ha.start()
        migrate(postgres_ha.url)
        yield redis_ha, postgres_ha
    finally:
        redis_ha.stop()
        postgres_ha.stop()


def _upload(client: httpx.Client, seed: int, answers: Answers, start: float) -> None:
    """One photo, sent again after each 503 until it is accepted."""
    body = encode(make_photo(seed, (320 + 8 * (seed % 7), 240 + 6 * (seed % 5))))
    while True:
        try:
            response = client.post("/photos", files={"file": (f"{seed}.jpg", body)})
        except httpx.TransportError as exc:
            with answers.lock:
                answers.broken.append(f"photo {seed}: {type(exc).__name__}: {exc}")
            return
        now = time.monotonic() - start
        with answers.lock:
            if response.status_code == 202:
                answers.accepted.append((now, response.json()["id"]))
                return
            if response.status_code != 503 or "Retry-After" not in response.headers:
                answers.broken.append(f"photo {seed}: {response.status_code} {response.text}")
                return
            answers.refused.append((now, seed))
        time.sleep(0.5)


def _client_loop(port: int, seeds: range, answers: Answers, start: float) -> None:
    interval = CLIENTS / UPLOADS_PER_SECOND
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        timeout=30,
    ) as client:
        for number, seed in enumerate(seeds):
            time.sleep(max(0.0, start + number * interval - time.monotonic()))
            _upload(client, seed, answers, start)


def _ready_events(database_url: str, ids: list[str]) -> dict[str, int]:
    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as conn:
        rows = conn.execute(
            "SELECT data->>'photo_id', count(*) FROM events WHERE type = 'photo.ready' "
            "AND data->>'photo_id' = ANY(%s) GROUP BY 1",
            (ids,),
        ).fetchall()
    return dict(rows)


def _statuses(database_url: str, ids: list[str]) -> dict[str, int]:
    return dict(Counter(statuses(database_url, ids).values()))


@pytest.mark.slow
def test_a_redis_failover_then_a_postgres_switchover_lose_nothing_and_double_nothing(
    ha: tuple[RedisWithSentinels, PostgresWithStandby], tmp_path: Path, model_cache: Path
) -> None:
    redis_ha, postgres_ha = ha
    # given the API and a worker that know Redis only through its sentinels (REDIS_URL names no
    # reachable server) and Postgres by both hosts, with the defaults but a short sweep
    settings: Settings = stack_settings(
        tmp_path, postgres_ha.primary, redis_ha.master, model_cache
    ).model_copy(
        update={
            "database_url": postgres_ha.url,
            "redis_url": "redis://unused.invalid:1/0",
            "redis_sentinels": redis_ha.sentinels.split(","),
            "redis_heartbeat_timeout_ms": 3_000,
            "redis_maintenance_chance": 200_000,
            "sweep_interval_seconds": 3,
            "sweep_pending_grace_seconds": 5,
        }
    )
    services = Services(tmp_path)
    try:
        services("api", settings).wait_for_log("Uvicorn running on", timeout=60)
        worker = services("worker", settings)
        worker.wait_for_log("selfcheck.passed", timeout=180)

        # when 4 clients upload 500 photos, and part-way the Redis master is SIGKILLed, later the
        # Postgres primary dies and its standby is promoted
        answers, start = Answers(), time.monotonic()
        clients = [
            threading.Thread(
                target=_client_loop,
                args=(settings.api_port, range(n, PHOTOS, CLIENTS), answers, start),
            )
            for n in range(CLIENTS)
        ]
        for client in clients:
            client.start()
        wait_until(lambda: len(answers.accepted) >= 100, timeout=120, interval=0.05)
        redis_killed_at = time.monotonic() - start
        old_master = redis_ha.master.port
        redis_ha.kill_master()
        wait_until(lambda: redis_ha.master_port() != old_master, timeout=60, interval=0.1)
        redis_promoted_after = round(time.monotonic() - start - redis_killed_at, 2)

        wait_until(lambda: len(answers.accepted) >= 300, timeout=120, interval=0.05)
        postgres_failed_at = time.monotonic() - start
        postgres_ha.fail_primary()
        time.sleep(PROMOTE_AFTER_S)
        postgres_ha.promote()
        for client in clients:
            client.join(timeout=300)

        # then every upload was answered 202 or 503 (never a 500, never a dropped connection) ...
        assert not answers.broken, answers.broken[:5]
        ids = [photo_id for _, photo_id in answers.accepted]
        assert len(ids) == PHOTOS == len(set(ids))
        # ... and every accepted photo ends READY, exactly once
        try:
            wait_until(
                lambda: _statuses(postgres_ha.url, ids) == {"READY": PHOTOS},
                timeout=400,
                interval=2,
            )
        except AssertionError:
            raise AssertionError(f"not all READY: {_statuses(postgres_ha.url, ids)}") from None
        ready_events = _ready_events(postgres_ha.url, ids)
        assert sorted(ready_events) == sorted(ids)
        doubled = sum(1 for count in ready_events.values() if count > 1)
        assert doubled == 0

        redis_gap = answers.seconds_without_acceptance(redis_killed_at)
        postgres_gap = answers.seconds_without_acceptance(postgres_failed_at)
        print(
            f"\nfailover: photos={PHOTOS} accepted={len(ids)} lost=0 doubled={doubled} "
            f"refused_503={len(answers.refused)} "
            f"redis: new master after {redis_promoted_after} s, "
            f"longest wait for an acceptance {redis_gap} s, "
            f"uploads sent later by the sweeper {services.started[0].log.count('photo.enqueue_deferred')}; "
            f"postgres: promoted {PROMOTE_AFTER_S} s after the primary died, "
            f"longest wait for an acceptance {postgres_gap} s; "
            f"all READY {round(time.monotonic() - start, 1)} s after the first upload"
        )
        assert redis_gap <= 15 and postgres_gap <= 15
        # and the failovers really hit the worker: it lost Redis and Postgres and went on
        assert "Consumer encountered a connection error" in worker.log
        assert "OperationalError" in worker.log
    finally:
        services.stop_all()


def test_a_write_refused_as_read_only_empties_the_pool_and_the_next_connection_works(postgres):
    # given a pooled connection to a server that takes no writes now (an old primary demoted to a
    # standby after a switchover: it still answers the pre-ping's SELECT 1)
    url = new_database(postgres, "demoted")
    with get_engine(url).connect() as connection:
        connection.exec_driver_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        connection.commit()
    # when a write goes through it
    with pytest.raises(OperationalError) as refused, session_scope(url) as session:
        session.execute(text("CREATE TABLE written (x int)"))
    # then it is the OperationalError the API answers 503 and the worker retries, the connection
    # is dropped, and the next session (a new connection: libpq finds the primary) writes
    assert refused.value.connection_invalidated
    assert "read-only" in str(refused.value)
    with session_scope(url) as session:
        session.execute(text("CREATE TABLE written (x int)"))


def _lag(api: httpx.Client) -> float | None:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith("photoembed_replica_lag_seconds "):
            return float(line.split()[1])
    return None


def _search(api: httpx.Client, **query: object) -> list[tuple[str, float]]:
    response = api.post("/search", json={**query, "limit": 20})
    assert response.status_code == 200, response.text
    return [(hit["photo_id"], round(hit["similarity"], 6)) for hit in response.json()["results"]]


def _listed(api: httpx.Client, path: str) -> list[str]:
    return [item["id"] for item in api.get(path, params={"limit": 100}).json()["items"]]


@pytest.mark.slow
def test_searches_and_lists_on_a_replica_answer_as_the_primary_and_its_lag_is_measured(
    tmp_path: Path, model_cache: Path, redis_server
) -> None:
    # given a primary with a streaming standby, one API reading from the primary only and one
    # with SEARCH_DATABASE_URL on the standby, and a worker
    postgres_ha = PostgresWithStandby(tmp_path)
    services = Services(tmp_path)
    try:
        postgres_ha.start()
        migrate(postgres_ha.primary.url)
        settings = stack_settings(tmp_path, postgres_ha.primary, redis_server, model_cache)
        on_replica = settings.model_copy(
            update={"search_database_url": postgres_ha.standby_url, "api_port": free_port()}
        )
        primary_api = start_api(settings, services)
        replica_api = start_api(on_replica, services)
        services("worker", settings).wait_for_log("selfcheck.passed", timeout=180)

        ada = primary_api.post("/persons", json={"name": "Ada"}).json()["id"]
        ids = [
            primary_api.post(
                "/photos",
                files={"file": (f"{seed}.jpg", encode(make_photo(seed)))},
                data={"person_id": ada} if seed % 2 else {},
            ).json()["id"]
            for seed in range(700, 712)
        ]
        wait_until(lambda: _statuses(settings.database_url, ids) == {"READY": 12}, timeout=180)
        wait_until(lambda: _lag(replica_api) == 0.0, timeout=30)

        # then searches and lists read from the replica answer exactly as the primary's
        queries = [{"photo_id": ids[0]}, {"person_id": ada}, {"text": "a person outdoors"}]
        for query in queries:
            assert _search(replica_api, **query) == _search(primary_api, **query), query
        for path in ("/photos", "/persons"):
            assert _listed(replica_api, path) == _listed(primary_api, path)

        # when the replica stops replaying (as a long conflict would) and a photo is made READY
        with psycopg.connect(postgres_ha.standby_url.replace("+psycopg", "")) as standby:
            standby.execute("SELECT pg_wal_replay_pause()")
        newest = primary_api.post(
            "/photos", files={"file": ("new.jpg", encode(make_photo(720)))}
        ).json()["id"]
        wait_until(lambda: _statuses(settings.database_url, [newest]) == {"READY": 1}, timeout=120)
        # then the replica's list does not have it yet (it is the replica that answers) ...
        assert newest in _listed(primary_api, "/photos")
        assert newest not in _listed(replica_api, "/photos")
        # ... a search by it still answers (its vector read from the primary) with the primary's
        # ranking of what the replica holds: all but the photo itself ...
        from_primary = _search(primary_api, photo_id=newest)
        assert from_primary[0] == (newest, 1.0)
        assert _search(replica_api, photo_id=newest) == from_primary[1:]

        # ... and the lag shows, and is gone once the replica replays again
        def lag_of_two_seconds() -> float | None:
            lag = _lag(replica_api)
            return lag if lag is not None and lag >= 2 else None

        lag_while_paused = wait_until(lag_of_two_seconds, timeout=30, interval=1)
        with psycopg.connect(postgres_ha.standby_url.replace("+psycopg", "")) as standby:
            standby.execute("SELECT pg_wal_replay_resume()")
        wait_until(lambda: _lag(replica_api) == 0.0, timeout=30, interval=1)
        assert newest in _listed(replica_api, "/photos")
        print(f"\nreplica: lag {lag_while_paused} s while paused, 0 after resume")
    finally:
        services.stop_all()
        postgres_ha.stop()
