"""MicroBatcher on its own: concurrent callers share one batch and each gets its own result; a
batch that fails with a device error is split until it runs."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from photoembed.clip.batching import DeviceFailure, MicroBatcher


def _doubled(items: list[np.ndarray]) -> list[np.ndarray]:
    time.sleep(0.02)  # a forward pass takes time; meanwhile more requests arrive
    return [item * 2 for item in items]


def test_concurrent_callers_share_batches_and_get_their_own_rows():
    sizes: list[int] = []
    batcher = MicroBatcher(
        _doubled, max_batch=8, max_wait=0.05, on_batch=lambda n, s: sizes.append(n)
    )
    inputs = [np.full((3,), float(i)) for i in range(32)]
    with ThreadPoolExecutor(16) as pool:
        outputs = list(pool.map(batcher.submit, inputs))

    for i, out in enumerate(outputs):
        assert np.array_equal(out, np.full((3,), 2.0 * i))
    assert sum(sizes) == 32 and max(sizes) <= 8
    assert len(sizes) < 32 / 2  # batched, not one by one


def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_still_runs():
    # given a batcher whose first batch fails; it closes a batch at two items, or after 5 s
    calls = 0

    def run(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return items

    batcher = MicroBatcher(run, max_batch=2, max_wait=5.0)

    def submit(value: int) -> object:
        try:
            return batcher.submit(value)
        except RuntimeError as exc:
            return exc

    # when two callers submit: they share the first batch
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(submit, [1, 2]))
    # then both got its error, it ran once, and a later batch runs normally
    assert [str(r) for r in results] == ["boom", "boom"]
    assert calls == 1
    assert batcher.submit(3) == 3


def test_a_batch_out_of_device_memory_is_split_until_every_item_runs():
    # given a device that runs at most 3 items at once and fails larger batches, and a batcher
    # that closes a batch only when 16 items are in it (or after 10 s)
    attempted: list[int] = []
    ran: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        attempted.append(len(items))
        if len(items) > 3:
            raise MemoryError("out of memory")
        ran.append(list(items))
        return [item * 10 for item in items]

    batcher = MicroBatcher(
        run, max_batch=16, max_wait=10.0, retry_smaller=lambda e: isinstance(e, MemoryError)
    )

    # when 16 callers submit
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(batcher.submit, range(16)))

    # then the 16 went to the device as one batch, which was split; every item ran exactly once,
    # in a batch the device could hold, and every caller got its own result
    assert attempted[0] == 16
    assert all(len(batch) <= 3 for batch in ran)
    assert sorted(item for batch in ran for item in batch) == list(range(16))
    assert results == [value * 10 for value in range(16)]


def test_an_item_that_fails_alone_on_the_device_gets_a_transient_error():
    def run(items: list[int]) -> list[int]:
        raise MemoryError("out of memory")

    batcher = MicroBatcher(run, max_batch=4, max_wait=0.0, retry_smaller=lambda e: True)
    with pytest.raises(DeviceFailure, match="out of memory"):
        batcher.submit(1)


def test_a_run_that_returns_the_wrong_number_of_results_fails_its_callers_not_the_thread():
    batcher = MicroBatcher(lambda items: items * 2, max_batch=4, max_wait=0.0)
    with pytest.raises(RuntimeError, match="gave 2 results"):
        batcher.submit(1)
    with pytest.raises(RuntimeError, match="gave 2 results"):
        batcher.submit(2)  # the inference thread is still serving


@pytest.mark.parametrize("streams", [1, 2, 3])
def test_streams_run_that_many_batches_side_by_side_and_never_more(streams):
    # given a forward pass that takes a while and records how many run at once
    running, most = 0, 0
    lock = threading.Lock()

    def run(items: list[int]) -> list[int]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.1)
        with lock:
            running -= 1
        return items

    batcher = MicroBatcher(run, max_batch=2, max_wait=0.0, streams=streams)
    # when far more items arrive than one stream can take
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(batcher.submit, range(12)))
    # then every item got its own result, and exactly `streams` passes overlapped
    assert results == list(range(12))
    assert most == streams
