"""Micro-batching: many worker threads, one forward pass.

Each Dramatiq worker thread decodes and preprocesses its own photo (Pillow releases the GIL),
then hands the pixel array to the process's MicroBatcher and waits. One inference thread collects
what has arrived, up to `max_batch` items or `max_wait` seconds after the first, runs them as one
batch and gives every caller its own row back (or the batch's exception). Messages are still acked
or retried one by one by their own threads.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from photoembed.config import Settings
from photoembed.metrics import BATCH_SIZE, INFERENCE_SECONDS


@dataclass
class _Request:
    pixels: np.ndarray
    result: Future[np.ndarray]


def _observe_batch(size: int, seconds: float) -> None:
    BATCH_SIZE.observe(size)
    INFERENCE_SECONDS.observe(seconds)


class MicroBatcher:
    def __init__(
        self,
        run_batch: Callable[[np.ndarray], np.ndarray],
        max_batch: int,
        max_wait: float,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max(1, max_batch)
        self._max_wait = max(0.0, max_wait)
        self._on_batch = on_batch
        self._requests: queue.Queue[_Request] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, run_batch: Callable[[np.ndarray], np.ndarray], settings: Settings
    ) -> MicroBatcher:
        """Sized by EMBED_BATCH_SIZE and EMBED_BATCH_WAIT_MS; every batch goes to the metrics."""
        return cls(
            run_batch,
            max_batch=settings.embed_batch_size,
            max_wait=settings.embed_batch_wait_ms / 1000,
            on_batch=_observe_batch,
        )

    def submit(self, pixels: np.ndarray) -> np.ndarray:
        """Embed one preprocessed image (C, H, W); blocks until its batch has run."""
        self._ensure_started()
        request = _Request(pixels, Future())
        self._requests.put(request)
        return request.result.result()

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="photoembed-inference", daemon=True
                )
                self._thread.start()

    def _collect(self) -> list[_Request]:
        batch = [self._requests.get()]
        deadline = time.monotonic() + self._max_wait
        while len(batch) < self._max_batch:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self._requests.get(timeout=remaining)
                    if remaining > 0
                    else self._requests.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _serve(self) -> None:
        while True:
            batch = self._collect()
            started = time.perf_counter()
            try:
                vectors = self._run_batch(np.stack([r.pixels for r in batch]))
            except BaseException as exc:
                for request in batch:
                    request.result.set_exception(exc)
                continue
            for request, vector in zip(batch, vectors, strict=True):
                request.result.set_result(vector)
            if self._on_batch is not None:
                self._on_batch(len(batch), time.perf_counter() - started)
