"""`photoembed import` measured on the real stack (`run_import_bench`, which run.py calls): the
import's rate to READY against the worker's own drain rate on the same photos, and the
client's peak memory on a large tree.

Each measurement runs the real command (`python -m photoembed.cli import`) in a child process and
reads its peak resident memory from the kernel's high-water mark (VmHWM, which starts anew at
exec: wait4's ru_maxrss would count the benchmark process the child was forked from) and its CPU
time from wait4.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from harness import API_KEY, Stack, client_for, fresh_database, libpq, start_api, wait_ready

from photoembed.config import Settings
from photoembed.samples import library_tree


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


def _all_ids(settings: Settings) -> list[str]:
    with psycopg.connect(libpq(settings)) as conn:
        return [str(row[0]) for row in conn.execute("SELECT id FROM photos")]


def run_import_bench(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    """`photoembed import` of a generated library (a folder per person, 1,000 photos) to READY
    with the defaults, against the worker draining the same photos uploaded beforehand, each on
    a fresh database; then the client's peak memory importing 10,000 files."""
    library = stack.workdir / "import-library"
    made = library_tree(library, args.import_photos, duplicates=20, not_photos=10)
    key_file = stack.workdir / "api-key"
    key_file.write_text(API_KEY + "\n")
    client_cpu: list[float] = []

    def import_to_ready() -> float:
        settings = stack.settings(database_url=fresh_database(stack, "import"))
        with ExitStack() as running:
            start_api(stack, settings, "api-import", running)
            worker = stack.start("worker", settings, "worker-import")
            running.callback(worker.stop)
            worker.wait_for_log("Worker process is ready", timeout=300)
            url = str(client_for(settings).base_url)
            run = run_import(url, key_file, str(library))
            ready = sorted(at for at, _ in wait_ready(settings, _all_ids(settings), timeout=1800))
        assert run.summary["uploaded"] == made.photos, run.summary
        client_cpu.append(1000 * run.cpu_seconds / made.photos)
        return (len(ready) - 1) / max(1e-9, ready[-1] - ready[0])

    def drain() -> float:
        settings = stack.settings(database_url=fresh_database(stack, "drain"))
        with ExitStack() as running:
            start_api(stack, settings, "api-import-drain", running)
            url = str(client_for(settings).base_url)
            run_import(url, key_file, str(library), "--max-backlog", "0")
            worker = stack.start("worker", settings, "worker-import-drain")
            running.callback(worker.stop)
            ready = sorted(at for at, _ in wait_ready(settings, _all_ids(settings), timeout=1800))
        return (len(ready) - 1) / max(1e-9, ready[-1] - ready[0])

    result: dict[str, Any] = import_vs_drain(import_to_ready, drain)
    large = stack.workdir / "import-large"
    library_tree(large, args.import_large, side=24, seed=3)
    settings = stack.settings(database_url=fresh_database(stack, "importmem"))
    with ExitStack() as running:
        start_api(stack, settings, "api-import-large", running)
        url = str(client_for(settings).base_url)
        big = run_import(url, key_file, str(large), "--max-backlog", "0")
        again = run_import(url, key_file, str(large), "--max-backlog", "0")
    result.update(
        files=made.files,
        client_cpu_ms_per_photo=round(client_cpu[0], 2),
        large_files=args.import_large,
        large_upload_photos_per_s=round(big.summary["uploaded"] / big.seconds, 1),
        large_peak_rss_mb=round(big.peak_rss_mb, 1),
        rerun_seconds=round(again.seconds, 1),
        rerun_uploaded_bytes=again.summary["uploaded_bytes"],
        rerun_peak_rss_mb=round(again.peak_rss_mb, 1),
    )
    return result


def print_import(result: dict[str, Any]) -> None:
    print(
        f"\nimport: {result['import_to_ready_photos_per_s']:.2f} photos/s to READY = "
        f"{result['import_vs_drain']:.2f}x the worker's drain of the same photos "
        f"({result['drain_photos_per_s']:.2f}; goal 0.95), the client's CPU "
        f"{result['client_cpu_ms_per_photo']} ms a photo; {result['large_files']} files: "
        f"{result['large_upload_photos_per_s']} uploads/s, client peak RSS "
        f"{result['large_peak_rss_mb']} MB (goal 100), a re-run {result['rerun_seconds']} s "
        f"sending {result['rerun_uploaded_bytes']} bytes ({result['rerun_peak_rss_mb']} MB)"
    )
