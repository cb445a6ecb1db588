"""`photoembed import` measured on the real stack (run.py starts the services and calls these):
the import's rate to READY against the worker's own drain rate on the same photos, and the
client's peak memory on a large tree.

Each measurement runs the real command (`python -m photoembed.cli import`) in a child process and
reads its peak resident memory from the kernel (wait4's ru_maxrss), not by sampling.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ImportRun:
    seconds: float
    peak_rss_mb: float
    summary: dict[str, Any]


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
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if process.returncode not in (0, 1):
        raise SystemExit(f"photoembed import exited {process.returncode}")
    # ru_maxrss is in KiB on Linux
    return ImportRun(seconds, usage.ru_maxrss / 1024, json.loads(output))


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
