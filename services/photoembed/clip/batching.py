"""Micro-batching: many worker threads, one forward pass.

Worker threads hand their item (preprocessed pixels, or a photo's encoded bytes for a device that
decodes them itself) to the process's MicroBatcher and wait. An inference thread collects what has
arrived, up to `max_batch` items or `max_wait` seconds after the first, runs them as one batch and
gives every caller its own result, or its own exception. With `streams` > 1, that many inference
threads do this side by side, one collecting the next batch while the others run theirs. A batch
that fails with a device error (out of memory, for one) is retried in halves down to single items,
so one oversized batch never fails its photos; a single item that still fails gets the error,
which the pipeline retries later.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

from photoembed.metrics import BATCH_SIZE, INFERENCE_SECONDS

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Request(Generic[Item, Result]):
    item: Item
    result: Future[Result]


class DeviceFailure(Exception):
    """A device error that persisted down to a single item: transient, the photo is tried again
    later (by this worker or another), never failed for good."""


def observe_batch(size: int, seconds: float) -> None:
    BATCH_SIZE.observe(size)
    INFERENCE_SECONDS.observe(seconds)


def never_split(exc: BaseException) -> bool:
    return False


class MicroBatcher(Generic[Item, Result]):
    def __init__(
        self,
        run_batch: Callable[[list[Item]], Sequence[Result | BaseException]],
        max_batch: int,
        max_wait: float,
        on_batch: Callable[[int, float], None] | None = None,
        retry_smaller: Callable[[BaseException], bool] = never_split,
        streams: int = 1,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max(1, max_batch)
        self._max_wait = max(0.0, max_wait)
        self._on_batch = on_batch
        self._retry_smaller = retry_smaller
        self._streams = max(1, streams)
        self._requests: queue.Queue[_Request[Item, Result]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()
        # One stream collects at a time, so that idle streams do not split arrivals between them.
        self._collect_lock = threading.Lock()

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def submit(self, item: Item) -> Result:
        """Run one item in a batch with whatever else arrives meanwhile; blocks until it ran."""
        self._ensure_started()
        request: _Request[Item, Result] = _Request(item, Future())
        self._requests.put(request)
        return request.result.result()

    def _ensure_started(self) -> None:
        with self._start_lock:
            while len(self._threads) < self._streams:
                name = f"photoembed-inference-{len(self._threads)}"
                thread = threading.Thread(target=self._serve, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)

    def _collect(self) -> list[_Request[Item, Result]]:
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

    def _run(self, batch: list[_Request[Item, Result]]) -> None:
        try:
            outcomes = list(self._run_batch([request.item for request in batch]))
            if len(outcomes) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(outcomes)} results")
        except BaseException as exc:
            if self._retry_smaller(exc):
                if len(batch) == 1:
                    exc = DeviceFailure(f"{type(exc).__name__}: {exc}")
                else:
                    half = len(batch) // 2
                    self._run(batch[:half])
                    self._run(batch[half:])
                    return
            for request in batch:
                request.result.set_exception(exc)
            return
        for request, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                request.result.set_exception(outcome)
            else:
                request.result.set_result(outcome)

    def _serve(self) -> None:
        while True:
            with self._collect_lock:
                batch = self._collect()
            started = time.perf_counter()
            self._run(batch)
            if self._on_batch is not None:
                self._on_batch(len(batch), time.perf_counter() - started)
