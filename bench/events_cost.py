"""`make bench`'s measurement of events and webhooks (`webhook_cost`, which run.py calls): what the
outbox and the webhooks' dispatcher cost the photos.

A backlog of photos drained (first READY to last, the worker's defaults) with no webhook and with
one registered to a receiver on this machine, alternating rounds (each side keeps its best, as the
other measurements do); with the webhook, how long each photo.ready took from its READY to the
receiver; on both sides the whole worker's CPU a photo and the events process's part of it, from
the worker's start (its boot left out) to the last READY and the last delivery; and, in this
process, what writing one event costs Postgres (the outbox row, in the transaction of the change)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import statistics
import threading
import time
import uuid
from contextlib import ExitStack
from typing import Any

import psutil
import psycopg
from harness import (
    CPU_MIX,
    REPO,
    Stack,
    client_for,
    cpu_seconds,
    percentile,
    photo_set,
    start_api,
    upload_all,
    wait_ready,
)
from pydantic import SecretStr

from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.devstack import (
    free_port,
)
from photoembed.events import record
from photoembed.models import DEFAULT_LIBRARY_ID, EventType
from photoembed.webhooks import endpoints
from photoembed.webhooks.delivery import deliver
from photoembed.webhooks.pump import pump_once
from photoembed.webhooks.secrets import new_encryption_key


class Arrivals:
    """A receiver on loopback that answers 204 and notes when each photo's photo.ready came. It
    stands for a server elsewhere, yet shares these cores: one asyncio loop, no thread per
    request, so that it takes as little from the photos as a receiver can."""

    def __init__(self) -> None:
        self.port = free_port()
        self.at: dict[str, float] = {}
        self.loop = asyncio.new_event_loop()
        server = self.loop.run_until_complete(
            asyncio.start_server(self._answer, "127.0.0.1", self.port)
        )
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = server

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                body = json.loads(await reader.readexactly(int(length[1]) if length else 0))
                self.at.setdefault(body["data"]["photo_id"], time.time())
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the sender closed the connection
        finally:
            writer.close()

    def close(self) -> None:
        self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


def outbox_write_us(database_url: str, count: int = 2000, per_transaction: int = 100) -> float:
    """Microseconds of one event's INSERT, as it rides in the transaction of the change (the
    commit is the change's: `per_transaction` events share one here)."""
    began = time.perf_counter()
    for start in range(0, count, per_transaction):
        with session_scope(database_url) as session:
            for n in range(start, start + per_transaction):
                record(session, DEFAULT_LIBRARY_ID, EventType.PHOTO_READY, {"photo_id": str(n)})
    return 1e6 * (time.perf_counter() - began) / count


def send_cpu_ms(settings: Settings, count: int = 300) -> float:
    """Milliseconds of CPU (this thread's: the receiver has its own) of one webhook send, warm,
    in the lots the pump hands over: `count` events to one endpoint, after a first round that
    warms the process and sends what the outbox already held."""
    receiver = Arrivals()
    with session_scope(settings.database_url) as session:
        made = endpoints.create(
            session,
            settings,
            DEFAULT_LIBRARY_ID,
            f"http://127.0.0.1:{receiver.port}/",
            ["photo.ready"],
        )
    try:
        for _ in range(2):
            with session_scope(settings.database_url) as session:
                for _ in range(count):
                    record(session, DEFAULT_LIBRARY_ID, EventType.PHOTO_READY, {"photo_id": "p"})
            lots: list[list[uuid.UUID]] = []
            pump_once(settings, lots.append)
            began = time.thread_time()
            for lot in lots:
                deliver(settings, lot)
            cpu_ms = 1000 * (time.thread_time() - began) / max(1, sum(map(len, lots)))
        return cpu_ms
    finally:
        receiver.close()
        with session_scope(settings.database_url) as session:
            endpoints.delete(session, made.webhook)


def ready_times(database_url: str, ids: list[str]) -> dict[str, float]:
    """Each photo's READY time (epoch seconds, the database's clock: this machine's)."""
    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as conn:
        rows = conn.execute(
            "SELECT id::text, extract(epoch FROM processed_at) FROM photos "
            "WHERE id = ANY(%s::uuid[])",
            (ids,),
        ).fetchall()
    return {photo: float(at) for photo, at in rows}


def events_process(supervisor: int) -> int:
    """The worker's events process among the supervisor's children."""

    for child in psutil.Process(supervisor).children(recursive=True):
        if "photoembed.worker.event_actors" in " ".join(child.cmdline()):
            return int(child.pid)
    return 0


def print_events(result: dict[str, Any]) -> None:
    hooked, plain = result["with_webhook"], result["without_webhook"]
    print(
        f"events: drain {plain['drain_photos_per_s']:.2f} photos/s without a webhook, "
        f"{hooked['drain_photos_per_s']:.2f} with one ({result['with_vs_without']:.3f}x, "
        f"{result['with_vs_without_mean_of_rounds']:.3f}x by the rounds' means; goal >= 0.97); "
        f"the worker's CPU a photo {plain['worker_cpu_ms_per_photo']} ms without, "
        f"{hooked['worker_cpu_ms_per_photo']} ms with ({result['cpu_with_vs_without']:.3f}x), "
        f"the events process {hooked['events_process_cpu_ms_per_photo']} ms of it "
        f"({100 * result['events_share_of_worker_cpu']:.1f}%; "
        f"{plain['events_process_cpu_ms_per_photo']} ms without a webhook); photo.ready at the "
        f"receiver {hooked['ready_to_receiver_s']['p50']} s after READY (p95 "
        f"{hooked['ready_to_receiver_s']['p95']} s); an outbox row {result['outbox_write_us']} us; "
        f"a send {result['send_cpu_ms']} ms of CPU"
    )


def webhook_cost(stack: Stack, count: int, rounds: int = 4) -> dict[str, Any]:
    """A backlog of twice `count` photos (a drain of a few seconds) drained with no webhook and
    with one (bench/py), alternating. Besides the drain (best of the rounds, as
    elsewhere; a few seconds of it move by some percent from round to round), the CPU the whole
    worker spent a photo from its start to the last READY (and the last delivery), and the
    events process's part of it (mean of the rounds): the steadier measure of what the outbox
    and the webhooks cost."""
    photos = photo_set(REPO / ".cache" / "bench-photos", CPU_MIX, 2 * count)
    result: dict[str, Any] = {}
    cpu: dict[str, list[tuple[float, float]]] = {"with_webhook": [], "without_webhook": []}
    key = SecretStr(new_encryption_key())
    for _round, hooked in itertools.product(range(rounds), (False, True)):
        settings = stack.settings(encryption_key=key, webhook_allow_private=True)
        receiver = Arrivals()
        with ExitStack() as running:
            running.callback(receiver.close)
            start_api(stack, settings, "api-events", running)
            client = client_for(settings)
            if hooked:
                made = client.post(
                    "/webhooks",
                    json={"url": f"http://127.0.0.1:{receiver.port}/", "events": ["photo.ready"]},
                )
                made.raise_for_status()
            ids, _ = upload_all(client, photos, clients=16)
            worker = stack.start("worker", settings, "worker-events")
            running.callback(worker.stop)
            worker.wait_for_log("Worker process is ready", timeout=300)
            # the CPU from here (a start, and a model exported on the first, is not the photos')
            worker.wait_for_log("selfcheck.passed", timeout=300)
            worker_pid = worker.process.pid if worker.process else 0
            events_pid = events_process(worker_pid)
            booted = cpu_seconds(worker_pid), cpu_seconds(events_pid)
            ready = wait_ready(settings, ids, timeout=1800)
            if hooked:
                deadline = time.monotonic() + 300
                while set(ids) - set(receiver.at) and time.monotonic() < deadline:
                    time.sleep(0.2)
                client.delete(f"/webhooks/{made.json()['id']}")
            worker_cpu = cpu_seconds(worker_pid) - booted[0]
            events_cpu = cpu_seconds(events_pid) - booted[1]
        side = "with_webhook" if hooked else "without_webhook"
        cpu[side].append((worker_cpu / len(ids), events_cpu / len(ids)))
        times = sorted(at for at, _ in ready)
        ready_at = ready_times(settings.database_url, ids)
        drain = (len(times) - 1) / max(1e-9, times[-1] - times[0])
        result.setdefault(f"{side}_rounds", []).append(round(drain, 2))
        if drain < result.get(side, {}).get("drain_photos_per_s", 0.0):
            continue
        result[side] = {"drain_photos_per_s": drain}
        if hooked:
            late = [receiver.at[p] - ready_at[p] for p in ids if p in receiver.at and p in ready_at]
            result[side].update(
                {
                    "delivered": len(late),
                    "ready_to_receiver_s": {
                        "p50": round(percentile(late, 50), 2),
                        "p95": round(percentile(late, 95), 2),
                    },
                }
            )
    for side, measured in cpu.items():
        result[side]["worker_cpu_ms_per_photo"] = round(
            1000 * statistics.mean(total for total, _ in measured), 2
        )
        result[side]["events_process_cpu_ms_per_photo"] = round(
            1000 * statistics.mean(events for _, events in measured), 2
        )
    result["with_vs_without"] = (
        result["with_webhook"]["drain_photos_per_s"]
        / result["without_webhook"]["drain_photos_per_s"]
    )
    result["with_vs_without_mean_of_rounds"] = statistics.mean(
        result["with_webhook_rounds"]
    ) / statistics.mean(result["without_webhook_rounds"])
    # the worker's CPU a photo with the webhook over without it, and the events process's
    # share of the worker's CPU with the webhook (the outbox's numbering and the sends)
    result["cpu_with_vs_without"] = (
        result["with_webhook"]["worker_cpu_ms_per_photo"]
        / result["without_webhook"]["worker_cpu_ms_per_photo"]
    )
    result["events_share_of_worker_cpu"] = (
        result["with_webhook"]["events_process_cpu_ms_per_photo"]
        / result["with_webhook"]["worker_cpu_ms_per_photo"]
    )
    result["outbox_write_us"] = round(outbox_write_us(stack.database_url), 1)
    settings = stack.settings(encryption_key=key, webhook_allow_private=True)
    result["send_cpu_ms"] = round(send_cpu_ms(settings), 3)
    return result
