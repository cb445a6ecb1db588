"""`photoembed import` measured on the real stack (run.py starts the services and calls these):
the import's rate to READY against the worker's own drain rate on the same photos, and the
client's peak memory on a large tree.

Each measurement runs the real command (`python -m photoembed.cli import`) in a child process and
reads its peak resident memory from the kernel's high-water mark (VmHWM, which starts anew at
exec: wait4's ru_maxrss would count the benchmark process the child was forked from) and its CPU
time from wait4.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ImportRun:
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    summary: dict[str, Any]


class HighWaterMark(threading.Thread):
    """The last VmHWM read of a running process (a high-water mark: the last read is the peak)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.status = Path(f"/proc/{pid}/status")
        self.kib = 0

    def run(self) -> None:
        while True:
            try:
                text = self.status.read_text()
            except OSError:
                return
            match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
            if match is None:  # a zombie: it has exited
                return
            self.kib = int(match.group(1))
            time.sleep(0.05)


def run_import(api_url: str, key_file: Path, *args: str) -> ImportRun:
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "photoembed.cli", "import", *args, "--json",
            "--api", api_url, "--key-file", str(key_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    memory = HighWaterMark(process.pid)
    memory.start()
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    memory.join()
    if process.returncode not in (0, 1):
        raise SystemExit(f"photoembed import exited {process.returncode}")
    cpu = usage.ru_utime + usage.ru_stime
    return ImportRun(seconds, cpu, memory.kib / 1024, json.loads(output))


def import_vs_drain(
    import_to_ready: Callable[[], float], drain: Callable[[], float]
) -> dict[str, float]:
    """Photos/s from the import's start to the last READY, against the worker's rate draining the
    same photos already uploaded: at 1.0 the import is never what the workers wait for."""
    imported, drained = import_to_ready(), drain()
    return {
        "import_to_ready_photos_per_s": round(imported, 2),
        "drain_photos_per_s": round(drained, 2),
        "import_vs_drain": round(imported / drained, 3),
    }
