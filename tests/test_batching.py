"""MicroBatcher on its own: concurrent callers share one batch and each gets its own row."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from photoembed.clip.batching import MicroBatcher


def test_concurrent_callers_share_batches_and_get_their_own_rows():
    sizes: list[int] = []

    def run(batch: np.ndarray) -> np.ndarray:
        time.sleep(0.02)  # a forward pass takes time; meanwhile more requests arrive
        return batch * 2

    batcher = MicroBatcher(run, max_batch=8, max_wait=0.05, on_batch=lambda n, s: sizes.append(n))
    inputs = [np.full((3,), float(i)) for i in range(32)]
    with ThreadPoolExecutor(16) as pool:
        outputs = list(pool.map(batcher.submit, inputs))

    for i, out in enumerate(outputs):
        assert np.array_equal(out, np.full((3,), 2.0 * i))
    assert sum(sizes) == 32 and max(sizes) <= 8
    assert len(sizes) < 32 / 2  # batched, not one by one


def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_still_runs():
    calls = 0
    gate = threading.Event()

    def run(batch: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 1:
            gate.wait(1)
            raise RuntimeError("boom")
        return batch

    batcher = MicroBatcher(run, max_batch=4, max_wait=0.01)
    with pytest.raises(RuntimeError, match="boom"):
        gate.set()
        batcher.submit(np.zeros(2))
    assert np.array_equal(batcher.submit(np.ones(2)), np.ones(2))
