"""`make bench`'s measurement of events and webhooks (run.py's `webhook_cost` starts the services and
calls these): what the outbox and the webhooks' dispatcher cost the photos.

A backlog of photos drained (first READY to last, the worker's defaults) with no webhook and with
one registered to a receiver on this machine, alternating rounds (each side keeps its best, as the
other measurements do); with the webhook, how long each photo.ready took from its READY to the
receiver; on both sides the whole worker's CPU a photo and the events process's part of it, from
the worker's start (its boot left out) to the last READY and the last delivery; and, in this
process, what writing one event costs Postgres (the outbox row, in the transaction of the change)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from typing import Any

import psycopg

from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.devstack import free_port
from photoembed.events import record
from photoembed.models import DEFAULT_LIBRARY_ID, EventType
from photoembed.webhooks import endpoints
from photoembed.webhooks.delivery import deliver
from photoembed.webhooks.pump import pump_once


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
    import psutil

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
