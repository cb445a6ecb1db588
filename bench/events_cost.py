"""`make bench`'s measurement of events and webhooks (run.py's `webhook_cost` starts the services and
calls these): what the outbox and the webhooks' dispatcher cost the photos.

A backlog of photos drained (first READY to last, the worker's defaults) with no webhook and with
one registered to a receiver on this machine, alternating rounds (each side keeps its best, as the
other measurements do); with the webhook, how long each photo.ready took from its READY to the
receiver and the events process's CPU a photo; and, in this process, what writing one event costs
Postgres (the outbox row, in the transaction of the change)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg

from photoembed.db import session_scope
from photoembed.devstack import free_port
from photoembed.events import record
from photoembed.models import DEFAULT_LIBRARY_ID, EventType


class Arrivals:
    """A receiver on loopback that answers 204 and notes when each photo's photo.ready came."""

    def __init__(self) -> None:
        self.port = free_port()
        self.at: dict[str, float] = {}
        arrivals = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                arrivals.at.setdefault(body["data"]["photo_id"], time.time())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def outbox_write_us(database_url: str, count: int = 2000, per_transaction: int = 100) -> float:
    """Microseconds of one event's INSERT, as it rides in the transaction of the change (the
    commit is the change's: `per_transaction` events share one here)."""
    began = time.perf_counter()
    for start in range(0, count, per_transaction):
        with session_scope(database_url) as session:
            for n in range(start, start + per_transaction):
                record(session, DEFAULT_LIBRARY_ID, EventType.PHOTO_READY, {"photo_id": str(n)})
    return 1e6 * (time.perf_counter() - began) / count


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
    hooked = result["with_webhook"]
    print(
        f"events: drain {result['without_webhook']['drain_photos_per_s']:.2f} photos/s without a "
        f"webhook, {hooked['drain_photos_per_s']:.2f} with one "
        f"({result['with_vs_without']:.3f}x; goal >= 0.97); photo.ready at the receiver "
        f"{hooked['ready_to_receiver_s']['p50']} s after READY (p95 "
        f"{hooked['ready_to_receiver_s']['p95']} s); the events process "
        f"{hooked['events_process_cpu_ms_per_photo']} ms CPU a photo; an outbox row "
        f"{result['outbox_write_us']} us"
    )
