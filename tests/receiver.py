"""A webhook receiver on a loopback port, for the tests: it records every request, can fail the
first attempt of some events, can go away for a while, and can answer slowly, hugely, with a
redirect or with 410."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from photoembed.devstack import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """`answer(webhook_id, attempt)` says what to answer: a status, or a callable that writes the
    answer itself."""

    answer: Callable[[str, int], int | Callable[[BaseHTTPRequestHandler], None]] = lambda i, n: 200
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                webhook_id = self.headers.get("webhook-id", "")
                with receiver.lock:
                    attempt = receiver.attempts.get(webhook_id, 0) + 1
                    receiver.attempts[webhook_id] = attempt
                said = receiver.answer(webhook_id, attempt)
                if callable(said):
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        said(self)  # the sender may cut a slow or huge answer off
                    status = 0
                else:
                    status = said
                    self.send_response(status)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                with receiver.lock:
                    receiver.received.append(Received(dict(self.headers.items()), body, status))

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def away_for(self, seconds: float) -> threading.Thread:
        """Stop listening (connections refused) for `seconds`, then listen again on the port."""

        def away() -> None:
            self.stop()
            time.sleep(seconds)
            self.start()

        thread = threading.Thread(target=away, daemon=True)
        thread.start()
        return thread

    def delivered(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if 200 <= r.answered < 300]
