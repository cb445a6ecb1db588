"""Events and webhooks on the real stack: the outbox written with each change, the live stream
resumed without a gap, signed webhooks delivered through a failing receiver, a killed worker and
a restarted Redis, and URLs that must not be called refused."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from standardwebhooks import Webhook as StandardWebhook

from photoembed import events
from photoembed.cli.database import migrate
from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.devstack import free_port
from photoembed.faces import samples
from photoembed.models import DeliveryStatus, EventType
from photoembed.models import Webhook as WebhookRow
from photoembed.webhooks import delivery, endpoints, pump
from photoembed.webhooks.secrets import EncryptionUnavailable, decrypt, new_encryption_key
from tests.conftest import Services, new_database, running_stack, stack_settings, start_api
from tests.helpers import (
    client_with_key,
    encode,
    make_photo,
    new_library,
    png_the_worker_cannot_decode,
    statuses,
    wait_until,
)
from tests.receiver import Receiver

pytestmark = pytest.mark.slow


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg", "postgresql")


def _upload(client: httpx.Client, data: bytes) -> str:
    response = client.post("/photos", files={"file": ("p.jpg", data)})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def read_stream(
    client: httpx.Client,
    wanted: int,
    last_event_id: str | None = None,
    timeout: float = 180,
) -> list[dict[str, Any]]:
    """Messages of GET /events ({"id", "event", "data"}) until `wanted` of them have come."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    with client.stream("GET", "/events", headers=headers, timeout=30) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        block: dict[str, Any] = {}
        for line in response.iter_lines():
            if line.startswith("id: "):
                block["id"] = line[4:]
            elif line.startswith("event: "):
                block["event"] = line[7:]
            elif line.startswith("data: "):
                block["data"] = json.loads(line[6:])
            elif line == "" and "data" in block:
                messages.append(block)
                block = {}
                if len(messages) >= wanted:
                    break
            assert time.monotonic() < deadline, f"{len(messages)} of {wanted} in {timeout}s"
    return messages


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres, redis_server, model_cache):
    """An API and a worker (faces off) on a database of their own."""
    folder = tmp_path_factory.mktemp("events")
    settings = stack_settings(folder, postgres, redis_server, model_cache).model_copy(
        update={"database_url": new_database(postgres, "events")}
    )
    with running_stack(settings, folder) as operator:
        yield settings, operator


def test_the_stream_resumes_after_a_break_with_every_event_once_and_in_order(stack):
    settings, operator = stack
    base = str(operator.base_url)
    _, key = new_library(operator, "stream", ["read", "upload", "manage"])
    _, other_key = new_library(operator, "elsewhere", ["read", "upload"])
    client, other = client_with_key(base, key), client_with_key(base, other_key)
    # given another library's photos, uploaded while ours are, and its own stream open
    pool = ThreadPoolExecutor(1)
    other_stream = pool.submit(read_stream, other, 3)
    time.sleep(1)  # connected before any of the photos below is READY
    theirs = [_upload(other, encode(make_photo(900 + n))) for n in range(3)]
    # when 12 photos are uploaded and the stream is read for the first six events, then left
    ours = [_upload(client, encode(make_photo(800 + n))) for n in range(12)]
    first = read_stream(client, 6)
    # and it reconnects once every photo is READY, from the last event it saw
    wait_until(lambda: set(statuses(settings.database_url, ours).values()) == {"READY"})
    rest = read_stream(client, 6, last_event_id=first[-1]["id"])
    # then every photo's photo.ready came once, in the outbox's order, none of the other library's
    messages = first + rest
    assert [m["event"] for m in messages] == ["photo.ready"] * 12
    assert sorted(m["data"]["data"]["photo_id"] for m in messages) == sorted(ours)
    assert len({m["id"] for m in messages}) == 12
    assert all(m["id"] == m["data"]["id"] for m in messages)
    with psycopg.connect(_libpq(settings.database_url)) as conn:
        positions = dict(conn.execute("SELECT id::text, position FROM events").fetchall())
    order = [positions[m["id"]] for m in messages]
    assert order == sorted(order)
    assert not {m["data"]["data"]["photo_id"] for m in messages} & set(theirs)
    body = messages[0]["data"]
    assert set(body) == {"id", "type", "library_id", "occurred_at", "data"}
    assert body["data"]["status"] == "READY" and 0 <= body["data"]["quality_score"] <= 1
    # and the other library's stream had its own three, none of ours
    seen = other_stream.result(timeout=180)
    pool.shutdown()
    assert sorted(m["data"]["data"]["photo_id"] for m in seen) == sorted(theirs)
    # and an id the outbox does not have is said to be a gap, then the stream goes on from now
    gap = read_stream(client, 1, last_event_id=str(uuid.uuid4()))
    assert gap[0]["event"] == "gap"
    # and a key that may not read the library gets no stream
    _, uploader = new_library(operator, "uploads only", ["upload"])
    refused = client_with_key(base, uploader).get("/events")
    assert refused.status_code == 403 and "'read' scope" in refused.json()["detail"]
    for opened in (client, other):
        opened.close()


def test_every_kind_of_change_is_an_event_with_its_data(stack):
    settings, operator = stack
    base = str(operator.base_url)
    _, key = new_library(operator, "changes", ["read", "upload", "manage"])
    client = client_with_key(base, key)
    pool = ThreadPoolExecutor(1)
    stream = pool.submit(read_stream, client, 6)
    time.sleep(1)  # connected before anything below happens
    # given a person with a photo, another person, and a file the worker cannot decode
    ada = client.post("/persons", json={"name": "Ada"}).json()["id"]
    bob = client.post("/persons", json={"name": "Bob"}).json()["id"]
    response = client.post(
        "/photos", files={"file": ("a.jpg", encode(make_photo(70)))}, data={"person_id": ada}
    )
    photo = response.json()["id"]
    broken = _upload(client, png_the_worker_cannot_decode(71))
    wait_until(
        lambda: (
            set(statuses(settings.database_url, [photo, broken]).values()) <= {"READY", "FAILED"}
        )
    )
    # when the person is renamed, the other merged into them, the photo deleted, then the person
    assert client.patch(f"/persons/{ada}", json={"name": "Ada L."}).status_code == 200
    assert client.post(f"/persons/{ada}/merge", json={"from": [bob]}).status_code == 200
    assert client.delete(f"/photos/{photo}").status_code == 204
    assert client.delete(f"/persons/{ada}").status_code == 204
    # then the stream tells each, in that order, with ids and statuses only
    events = [m["data"] for m in stream.result(timeout=180)]
    pool.shutdown()
    by_type = [(e["type"], e["data"]) for e in events]
    kinds = [kind for kind, _ in by_type]
    assert sorted(kinds[:2]) == ["photo.failed", "photo.ready"], kinds
    assert kinds[2:] == ["person.updated", "person.updated", "photo.deleted", "person.updated"]
    failed = next(data for kind, data in by_type if kind == "photo.failed")
    assert failed["photo_id"] == broken and failed["status"] == "FAILED" and failed["error"]
    changes = [data for kind, data in by_type if kind == "person.updated"]
    assert changes[0] == {"person_id": ada, "change": "renamed", "name": "Ada L."}
    assert changes[1]["change"] == "merged" and changes[1]["merged_from"] == [bob]
    assert changes[-1] == {"person_id": ada, "change": "deleted"}
    deleted = next(data for kind, data in by_type if kind == "photo.deleted")
    assert deleted == {"photo_id": photo, "status": "DELETED"}
    assert all("vector" not in json.dumps(data) for _, data in by_type)
    client.close()


# Webhooks


def test_private_addresses_are_refused_unless_the_operator_allows_them(
    settings, start_service, http_client
):
    # given an API that does not allow private addresses
    strict = settings.model_copy(update={"webhook_allow_private": False, "api_port": free_port()})
    with start_api(strict, start_service) as api:
        for url, said in (
            ("http://127.0.0.1:9/hook", "loopback"),
            ("http://localhost:8080/hook", "loopback"),
            ("http://10.1.2.3/hook", "private"),
            ("http://192.168.0.10/hook", "private"),
            ("http://169.254.169.254/latest/meta-data/", "link-local"),
            ("http://[::1]:8000/", "loopback"),
            ("http://[::ffff:127.0.0.1]/", "loopback"),
            ("ftp://example.com/", "http:// or https://"),
            ("http://user:pw@93.184.215.14/", "user name or password"),
        ):
            response = api.post("/webhooks", json={"url": url, "events": ["photo.ready"]})
            assert response.status_code == 422, (url, response.text)
            assert said in response.json()["detail"], (url, response.text)
        # a public address is taken (nothing is sent until an event comes)
        public = api.post(
            "/webhooks", json={"url": "https://93.184.215.14/hook", "events": ["photo.ready"]}
        )
        assert public.status_code == 201, public.text
        assert public.json()["secret"].startswith("whsec_")
        listed = api.get("/webhooks").json()["items"]
        assert [w["url"] for w in listed] == ["https://93.184.215.14/hook"]
        assert "secret" not in listed[0]
    # and one that allows them takes the loopback receiver
    with start_api(settings, start_service) as api:
        allowed = api.post(
            "/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["photo.ready"]}
        )
        assert allowed.status_code == 201, allowed.text


@pytest.fixture
def one_event(settings: Settings) -> Iterator[tuple[Settings, uuid.UUID, uuid.UUID]]:
    """A database with one library's event and a webhook for it, no worker: (settings, library,
    event id)."""
    settings = settings.model_copy(update={"database_url": _fresh(settings)})
    with session_scope(settings.database_url) as session:
        library = session.execute(
            text(
                "INSERT INTO libraries (id, name) VALUES (gen_random_uuid(), 'hooks') RETURNING id"
            )
        ).scalar_one()
        event = events.record(session, library, EventType.PHOTO_READY, {"photo_id": "p"})
    yield settings, library, event


def _fresh(settings: Settings) -> str:
    name = f"hooks_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(settings.database_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = settings.database_url.replace("/photoembed?", f"/{name}?")
    migrate(url)
    return url


def _delivery(settings: Settings, library: uuid.UUID, url: str) -> tuple[uuid.UUID, str]:
    """A webhook of the library at `url` and the pump's delivery of the event to it, handed over
    (SENDING): (delivery id, the endpoint's secret)."""
    with session_scope(settings.database_url) as session:
        made = endpoints.create(session, settings, library, url, ["photo.ready"])
    with session_scope(settings.database_url) as session:
        events.sequence(session)
    assert pump.fan_out(settings) == 1
    ((delivery_id,),) = pump.claim_due(settings)
    return delivery_id, made.secret


def _row(settings: Settings, delivery_id: uuid.UUID) -> dict[str, Any]:
    with psycopg.connect(_libpq(settings.database_url)) as conn:
        conn.row_factory = psycopg.rows.dict_row
        row = conn.execute(
            "SELECT d.*, w.disabled_at, w.disabled_reason, w.failing_since FROM "
            "webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = %s",
            (delivery_id,),
        ).fetchone()
    assert row is not None
    return row


def test_a_delivery_is_signed_and_each_answer_decides_what_comes_next(one_event):
    settings, library, event = one_event
    answers = iter([500, 302, 200])
    receiver = Receiver(answer=lambda webhook_id, attempt: next(answers)).start()
    delivery_id, secret = _delivery(settings, library, receiver.url)

    # a 500: tried again within 10 s, the endpoint failing since now
    assert delivery.deliver(settings, [delivery_id]) == {delivery_id: "retrying"}
    row = _row(settings, delivery_id)
    assert row["status"] == DeliveryStatus.PENDING and row["attempts"] == 1
    assert row["last_status_code"] == 500 and row["failing_since"] is not None
    wait = (row["next_attempt_at"] - row["last_attempt_at"]).total_seconds()
    assert 0 < wait <= 10
    # a redirect is not followed: another failure, later
    _hand_over(settings, delivery_id)
    assert delivery.deliver(settings, [delivery_id]) == {delivery_id: "retrying"}
    row = _row(settings, delivery_id)
    assert row["last_status_code"] == 302 and row["attempts"] == 2
    assert (row["next_attempt_at"] - row["last_attempt_at"]).total_seconds() > wait
    # a 200 ends it, the endpoint no longer failing
    _hand_over(settings, delivery_id)
    assert delivery.deliver(settings, [delivery_id]) == {delivery_id: "delivered"}
    row = _row(settings, delivery_id)
    assert row["status"] == DeliveryStatus.DELIVERED and row["failing_since"] is None
    # and every send carried the same id and body, each signed as Standard Webhooks says
    assert len(receiver.received) == 3
    verifier = StandardWebhook(secret)
    for sent in receiver.received:
        assert sent.headers["webhook-id"] == str(event)
        assert verifier.verify(sent.body, sent.headers)["id"] == str(event)
        assert sent.body == receiver.received[0].body
    receiver.stop()


def _hand_over(settings: Settings, delivery_id: uuid.UUID) -> None:
    with psycopg.connect(_libpq(settings.database_url)) as conn:
        conn.execute(
            "UPDATE webhook_deliveries SET status = 'SENDING', claimed_at = now() WHERE id = %s",
            (delivery_id,),
        )


def test_410_disables_the_endpoint_and_a_replay_enables_it(one_event):
    settings, library, _ = one_event
    receiver = Receiver(answer=lambda webhook_id, attempt: 410).start()
    delivery_id, _ = _delivery(settings, library, receiver.url)
    assert delivery.deliver(settings, [delivery_id]) == {delivery_id: "gone"}
    row = _row(settings, delivery_id)
    assert row["status"] == DeliveryStatus.FAILED and "410" in row["disabled_reason"]
    with session_scope(settings.database_url) as session:
        webhook = session.get(WebhookRow, row["webhook_id"])
        assert webhook is not None
        queued = endpoints.replay(session, webhook, datetime.now(UTC) - timedelta(hours=1))
    assert queued == 1
    row = _row(settings, delivery_id)
    assert row["disabled_at"] is None and row["status"] == DeliveryStatus.PENDING
    receiver.stop()


def test_deliveries_go_in_lots_of_one_endpoint_each_sent_once_in_order(one_event, monkeypatch):
    settings, library, _ = one_event
    # given 44 more events of the library and two endpoints: one answers 410 to the 4th event,
    # the other takes a second over each answer
    with session_scope(settings.database_url) as session:
        for n in range(44):
            events.record(session, library, EventType.PHOTO_READY, {"photo_id": f"p{n}"})
    ordered: list[str] = []

    def gone_at_the_fourth(webhook_id: str, attempt: int) -> int:
        ordered.append(webhook_id)
        return 410 if len(ordered) == 4 else 200

    leaving = Receiver(answer=gone_at_the_fourth).start()
    slow = Receiver(answer=lambda webhook_id, attempt: time.sleep(1) or 200).start()
    with session_scope(settings.database_url) as session:
        leaving_id = endpoints.create(session, settings, library, leaving.url, ["photo.ready"])
        slow_id = endpoints.create(session, settings, library, slow.url, ["photo.ready"])
        leaving_id, slow_id = leaving_id.webhook.id, slow_id.webhook.id
        events.sequence(session)
    assert pump.fan_out(settings) == 90

    # when the pump hands them over: lots of at most 20, each of one endpoint
    lots = pump.claim_due(settings)
    assert sorted(len(lot) for lot in lots) == [5, 5, 20, 20, 20, 20]
    with psycopg.connect(_libpq(settings.database_url)) as conn:
        endpoint_of = dict(conn.execute("SELECT id, webhook_id FROM webhook_deliveries"))
    assert all(len({endpoint_of[d] for d in lot}) == 1 for lot in lots)

    # then a lot is sent in the events' order, and a 410 stops the lot: what came after it
    # goes back unsent, no attempt counted
    leaving_lot = next(lot for lot in lots if endpoint_of[lot[0]] == leaving_id)
    outcomes = delivery.deliver(settings, leaving_lot)
    assert list(outcomes.values()).count("delivered") == 3
    assert list(outcomes.values()).count("gone") == 1
    assert list(outcomes.values()).count("skipped") == 16
    with psycopg.connect(_libpq(settings.database_url)) as conn:
        sent_order = [
            str(row[0])
            for row in conn.execute(
                "SELECT e.id FROM webhook_deliveries d JOIN events e ON e.id = d.event_id "
                "WHERE d.id = ANY(%s) AND d.attempts = 1 ORDER BY e.position",
                (leaving_lot,),
            )
        ]
        unsent = conn.execute(
            "SELECT count(*) FROM webhook_deliveries WHERE id = ANY(%s) AND attempts = 0 "
            "AND status = 'PENDING' AND claimed_at IS NULL",
            (leaving_lot,),
        ).fetchone()
    assert ordered == sent_order
    assert unsent == (16,)

    # and a slow endpoint's lot stops sending when its time is spent, well before the claim
    # would be taken back: what is left goes back unsent
    monkeypatch.setattr(delivery, "SEND_BUDGET_S", 2.5)
    slow_lot = next(lot for lot in lots if endpoint_of[lot[0]] == slow_id)
    began = time.monotonic()
    outcomes = delivery.deliver(settings, slow_lot)
    delivered = list(outcomes.values()).count("delivered")
    assert 1 <= delivered <= 3 and list(outcomes.values()).count("skipped") == 20 - delivered
    assert time.monotonic() - began < pump.CLAIM_LEASE_S
    leaving.stop()
    slow.stop()


def test_a_slow_or_huge_answer_is_cut_off_and_a_day_of_failures_disables(one_event):
    settings, library, _ = one_event
    settings = settings.model_copy(
        update={"webhook_timeout_seconds": 2, "webhook_max_response_bytes": 1000}
    )

    def slow(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("content-length", "100")
        handler.end_headers()
        for _ in range(10):  # a byte a second: each read is quick, the whole is not
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(1)

    def huge(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("content-length", str(10**6))
        handler.end_headers()
        handler.wfile.write(b"x" * 10**6)

    behaviours = iter([slow, huge, 500])
    receiver = Receiver(answer=lambda webhook_id, attempt: next(behaviours)).start()
    delivery_id, _ = _delivery(settings, library, receiver.url)
    began = time.monotonic()
    assert delivery.deliver(settings, [delivery_id]) == {delivery_id: "retrying"}
    assert time.monotonic() - began < 5
    assert "slower than 2 s" in _row(settings, delivery_id)["last_error"]
    _hand_over(settings, delivery_id)
    assert delivery.deliver(settings, [delivery_id]) == {delivery_id: "retrying"}
    assert "larger than the limit" in _row(settings, delivery_id)["last_error"]
    # when the endpoint has failed for a day, the next failure disables it
    with psycopg.connect(_libpq(settings.database_url)) as conn:
        conn.execute("UPDATE webhooks SET failing_since = now() - interval '25 hours'")
    _hand_over(settings, delivery_id)
    assert delivery.deliver(settings, [delivery_id]) == {delivery_id: "retrying"}
    row = _row(settings, delivery_id)
    assert row["disabled_at"] is not None and "24 hours" in row["disabled_reason"]
    receiver.stop()


def test_the_secrets_are_stored_encrypted_and_need_the_key(one_event):
    settings, library, _ = one_event
    receiver = Receiver().start()
    _, secret = _delivery(settings, library, receiver.url)
    with psycopg.connect(_libpq(settings.database_url)) as conn:
        stored = conn.execute("SELECT secret_encrypted FROM webhooks").fetchone()[0]
    assert secret not in stored and secret.removeprefix("whsec_") not in stored
    other_key = settings.model_copy(update={"encryption_key": SecretStr(new_encryption_key())})
    with pytest.raises(EncryptionUnavailable, match="cannot be decrypted"):
        decrypt(other_key, stored)
    receiver.stop()


# Everything at once


def _faces_photos() -> list[bytes]:
    faces = samples.real_faces()
    variants = samples.variants(faces["hopper"], samples.FACE_SIDE["hopper"])
    return [encode(image) for image in variants.values()]


def test_every_event_arrives_through_a_failing_receiver_a_killed_worker_and_a_redis_restart(
    tmp_path, postgres, redis_server, model_cache
):
    settings = stack_settings(tmp_path, postgres, redis_server, model_cache).model_copy(
        update={
            "database_url": new_database(postgres, "chaos"),
            "faces_enabled": True,
            "redis_heartbeat_timeout_ms": 3_000,
            "redis_maintenance_chance": 200_000,
            "claim_lease_seconds": 20,
            "sweep_interval_seconds": 3,
            "sweep_pending_grace_seconds": 5,
        }
    )
    seen: set[str] = set()

    def answer(webhook_id: str, attempt: int) -> int:
        # the first attempt of every third event fails
        seen.add(webhook_id)
        return 500 if attempt == 1 and len(seen) % 3 == 0 else 200

    receiver = Receiver(answer=answer).start()
    services = Services(tmp_path)
    try:
        with start_api(settings, services) as operator:
            _, key = new_library(operator, "chaos", ["read", "upload", "manage"])
            client = client_with_key(str(operator.base_url), key)
            hook = client.post(
                "/webhooks", json={"url": receiver.url, "events": ["photo.ready", "faces.done"]}
            ).json()
            worker = services("worker", settings)
            worker.wait_for_log("selfcheck.passed", timeout=240)
            faces = _faces_photos()
            photos = [
                faces[n % len(faces)] if n % 4 == 0 else encode(make_photo(2000 + n, (320, 240)))
                for n in range(200)
            ]
            ids = [_upload(client, data) for data in photos[:80]]
            # when a worker is killed mid-run
            wait_until(
                lambda: list(statuses(settings.database_url, ids).values()).count("READY") >= 20
            )
            at_kill = list(statuses(settings.database_url, ids).values())
            worker.stop(signal.SIGKILL)
            assert 0 < at_kill.count("READY") < len(ids), at_kill
            ids += [_upload(client, data) for data in photos[80:140]]
            worker = services("worker", settings)
            worker.wait_for_log("selfcheck.passed", timeout=240)
            # and Redis restarts, and the receiver is away for 20 s
            redis_server.stop()
            time.sleep(2)
            redis_server.start()
            away = receiver.away_for(20)
            ids += [_upload(client, data) for data in photos[140:]]
            away.join()
            # then every photo's photo.ready and faces.done arrive, signed, none missing
            wanted = {(photo, kind) for photo in ids for kind in ("photo.ready", "faces.done")}

            def arrived() -> set[tuple[str, str]]:
                bodies = [json.loads(r.body) for r in receiver.delivered()]
                return {(b["data"]["photo_id"], b["type"]) for b in bodies}

            try:
                wait_until(lambda: wanted <= arrived(), timeout=600, interval=2)
            except AssertionError:
                missing = wanted - arrived()
                raise AssertionError(
                    f"{len(missing)} events never arrived: {sorted(missing)[:5]}"
                ) from None
    finally:
        services.stop_all()
    verifier = StandardWebhook(hook["secret"])
    by_id: dict[str, set[bytes]] = {}
    for sent in receiver.received:
        verifier.verify(sent.body, sent.headers)
        by_id.setdefault(sent.headers["webhook-id"], set()).add(sent.body)
    # every repeat of an event is the same message under the same id
    assert all(len(bodies) == 1 for bodies in by_id.values())
    retried = [i for i, n in receiver.attempts.items() if n > 1]
    assert len(retried) >= len(wanted) // 3 - 5
    print(
        f"events={len(wanted)} sends={len(receiver.received)} repeated={len(retried)} "
        f"at_kill={ {s: at_kill.count(s) for s in set(at_kill)} }"
    )
    receiver.stop()
