"""Models that load once, on first use, under a lock, and never cross a fork.

The CLIP embedders and the face models share these two pieces: a worker process creates its model
cheaply at import or boot, the first use (or the boot self-check) pays the load, concurrent first
uses wait for the one load, and a forked child makes its own instead of inheriting the parent's.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LoadOnce(Generic[T]):
    """`get()` runs `load` the first time (one caller loads, the others wait) and returns its
    result every time after; a load that raises is tried again by the next caller."""

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._value: T | None = None

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._load()
            return self._value


class PerProcess(Generic[T]):
    """One object per process: `get(create)` creates it in this process on first use; a forked
    child creates its own rather than use the parent's."""

    def __init__(self) -> None:
        self._value: T | None = None
        self._pid: int | None = None

    def get(self, create: Callable[[], T]) -> T:
        if self._value is None or self._pid != os.getpid():
            self._value = create()
            self._pid = os.getpid()
        return self._value
