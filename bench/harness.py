"""What every measurement of `make bench` shares: the stack (embedded Postgres, Redis, the API and
worker processes, the seeded model cache), the photo sets, uploads, and the CPU and memory clocks."""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"

import httpx
import numpy as np
import psutil
import psycopg

from photoembed.cli.database import migrate
from photoembed.cli.serve import api_processes
from photoembed.clip.weights_files import ensure_random_weights, seed_hf_cache
from photoembed.config import Settings
from photoembed.devstack import (
    LocalPostgres,
    LocalRedis,
    ServiceProcess,
    free_port,
    machine_memory,
    postgres_memory_settings,
    settings_env,
)
from photoembed.samples import encode, make_photo

REPO = Path(__file__).resolve().parents[1]

REPO = Path(__file__).resolve().parents[1]


API_KEY = "bench-key"


# What phones and cameras upload: (width, height, format, count per set).
CPU_MIX = [
    (4000, 3000, "JPEG", 3),
    (3000, 2000, "JPEG", 3),
    (1600, 1200, "JPEG", 3),
    (1024, 768, "PNG", 3),
]


# The GPU machine's mix (../shared/gpu.md): 8 at 12 MP, 8 at 3 MP, 8 at 0.8 MP, a third PNG.
GPU_MIX = [
    (4000, 3000, "JPEG", 5),
    (4000, 3000, "PNG", 3),
    (2000, 1500, "JPEG", 5),
    (2000, 1500, "PNG", 3),
    (1024, 768, "JPEG", 6),
    (1024, 768, "PNG", 2),
]


def photo_set(folder: Path, mix: list[tuple[int, int, str, int]], count: int) -> list[Path]:
    """`count` uploads cycling over one set of distinct photos, made once and kept in .cache
    (a 12 MP photo takes ~1 s to make). Repeats are separate photos to the service."""
    folder.mkdir(parents=True, exist_ok=True)
    kinds = [(w, h, fmt) for w, h, fmt, n in mix for _ in range(n)]
    distinct = []
    for i, (width, height, fmt) in enumerate(kinds):
        path = folder / f"{i:03d}-{width}x{height}.{fmt.lower()}"
        if not path.exists():
            options = {"quality": 90} if fmt == "JPEG" else {"compress_level": 1}
            path.write_bytes(encode(make_photo(1000 + i, (width, height)), fmt, **options))
        distinct.append(path)
    return [distinct[i % len(distinct)] for i in range(count)]


class PeakRss(threading.Thread):
    """Samples the resident memory of a process and its children."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.current = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
                self.current = sum(p.memory_info().rss for p in procs)
                self.peak = max(self.peak, self.current)
            except psutil.Error:
                pass


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (the server processes it started)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
        return sum(sum(p.cpu_times()[:2]) for p in processes)
    except psutil.Error:
        return 0.0


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU of every thread of a process and its children, by thread id."""
    seconds = {}
    try:
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            seconds.update({t.id: t.user_time + t.system_time for t in process.threads()})
    except psutil.Error:
        pass
    return seconds


def database_cpu_seconds(stack: Stack) -> float:
    """Postgres and Redis, which serve the measured photos on the same cores."""
    total = 0.0
    for process in psutil.process_iter(["name", "cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if str(stack.workdir) in command or f"--port {stack.redis.port}" in command:
            total += cpu_seconds(process.pid)  # the postmaster with its backends
    return total


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def libpq(settings: Settings) -> str:
    return settings.database_url.replace("postgresql+psycopg", "postgresql")


def wait_ready(
    settings: Settings, ids: list[str], timeout: float = 900
) -> list[tuple[float, float]]:
    """Wait (one SQL query per poll) and return each photo's (READY time, upload-to-READY ms)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(libpq(settings), autocommit=True) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT status, error, extract(epoch FROM processed_at), "
                "extract(epoch FROM processed_at - created_at) * 1000 "
                "FROM photos WHERE id = ANY(%s::uuid[])",
                (ids,),
            ).fetchall()
            failed = [row for row in rows if row[0] == "FAILED"]
            if failed:
                raise SystemExit(f"{len(failed)} photos FAILED: {failed[0][1]}")
            if len(rows) == len(ids) and all(row[0] == "READY" for row in rows):
                return [(float(row[2]), float(row[3])) for row in rows]
            time.sleep(0.1)
    raise SystemExit(f"photos not READY after {timeout}s")


def worker_stages(metrics_port: int) -> dict[str, float]:
    """Where the worker's time went, from its own Prometheus metrics."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/", timeout=10).text

    def total(name: str) -> float:
        pattern = rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$"
        return sum(float(v) for v in re.findall(pattern, text, re.M))

    batches = total("photoembed_inference_batch_size_count")
    return {
        "decode_and_score_s": total("photoembed_decode_seconds_sum"),
        "inference_s": total("photoembed_inference_seconds_sum"),
        "batches": batches,
        "mean_batch_size": total("photoembed_inference_batch_size_sum") / batches
        if batches
        else 0.0,
    }


class Profiler:
    """py-spy on the worker process, summarised as the hottest frames."""

    def __init__(self, worker_pid: int, output: Path) -> None:
        children = psutil.Process(worker_pid).children(recursive=True)
        target = max(children, key=lambda p: p.memory_info().rss) if children else None
        self.output = output
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
             str((target or psutil.Process(worker_pid)).pid), "--format", "raw", "--rate", "50",
             "--output", str(output), "--nonblocking", "--threads"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> list[dict[str, Any]]:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(60)
        inclusive: dict[str, int] = {}
        total = 0
        for line in self.output.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            total += int(count)
            for frame in set(stack.split(";")):
                name = re.sub(r" \(.*?:\d+\)$", "", frame)
                inclusive[name] = inclusive.get(name, 0) + int(count)
        keys = ("photoembed", "encode_image", "load_rgb", "quality", "preprocess", "resize",
                "decode", "embed", "claim", "store", "run_session", "read")  # fmt: skip
        top = [(f, n / max(1, total)) for f, n in inclusive.items() if any(k in f for k in keys)]
        return [
            {"frame": f, "share": round(s, 3)} for f, s in sorted(top, key=lambda i: -i[1])[:20]
        ]


class Stack:
    """Postgres, Redis and a seeded model cache for the whole run; a fresh queue, photo folder
    and ports for each measurement, so that runs do not see each other's photos."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.postgres = LocalPostgres(workdir / "pg")
        self.redis = LocalRedis(workdir / "redis")
        self.model_cache = workdir / "models"
        self.runs = 0

    def __enter__(self) -> Stack:
        weights = REPO / ".cache" / "test-weights" / "vit-b-32-random.bin"
        ensure_random_weights(weights)
        seed_hf_cache(self.model_cache, weights)
        self.database_url = self.postgres.start()
        # `make run`'s sizing (devstack.postgres_memory_settings), and room for the many worker
        # processes of a GPU machine (the budget is logged)
        sizing = postgres_memory_settings(machine_memory(), os.cpu_count() or 1)
        self.postgres.configure({"max_connections": "400", **sizing})
        self.redis_url = self.redis.start()
        migrate(self.database_url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.redis.stop()
        self.postgres.stop()

    def settings(self, **overrides: Any) -> Settings:
        self.runs += 1
        base = Settings(
            env="production",
            database_url=self.database_url,
            redis_url=self.redis_url,
            storage_dir=self.workdir / f"photos-{self.runs}",
            api_keys=[API_KEY],
            api_port=free_port(),
            clip_cache_dir=self.model_cache,
            log_format="json",
            metrics_port=free_port(),
            queue_name=f"bench-{self.runs}-{uuid.uuid4().hex[:6]}",
            face_queue_name=f"bench-faces-{self.runs}-{uuid.uuid4().hex[:6]}",
            # the CLIP stage's figures are measured alone, comparable from run to run; what the
            # face stage costs it is measured beside it (face_cost, with faces off and on)
            faces_enabled=False,
        )
        return base.model_copy(update=overrides)

    def start(self, command: str, settings: Settings, name: str) -> ServiceProcess:
        log = self.workdir / f"{name}-{self.runs}.log"
        return ServiceProcess([command], settings_env(settings), log).start()


def libpq_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg", "postgresql")


def fresh_database(stack: Stack, prefix: str) -> str:
    """A new, migrated database on the run's server (for what must see only its own photos)."""
    database = f"{prefix}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(libpq_url(stack.database_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    url = stack.database_url.replace("/photoembed?", f"/{database}?")
    migrate(url)
    return url


def client_for(settings: Settings) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{settings.api_port}",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=120,
    )


@functools.cache
def photo_bytes(path: Path) -> bytes:
    return path.read_bytes()


def start_api(stack: Stack, settings: Settings, name: str, running: ExitStack) -> ServiceProcess:
    """The API, up and settled: each of its processes has worked out the model's identity (a
    child process importing torch, once at start), which would otherwise share the cores with
    what is measured and count as the API's CPU."""
    api = stack.start("api", settings, name)
    running.callback(api.stop)
    api.wait_for_log("Uvicorn running on", timeout=300)
    deadline = time.monotonic() + 300
    while api.log.count('"event": "api.active_model"') < api_processes(settings):
        if time.monotonic() > deadline:
            raise SystemExit(f"the API did not settle; its log: {api.log_path}")
        time.sleep(0.2)
    return api


def upload(client: httpx.Client, path: Path) -> str:
    response = client.post("/photos", files={"file": (path.name, photo_bytes(path))})
    response.raise_for_status()
    photo_id: str = response.json()["id"]
    return photo_id


def upload_all(client: httpx.Client, photos: list[Path], clients: int) -> tuple[list[str], float]:
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        ids = list(pool.map(lambda p: upload(client, p), photos))
    return ids, len(photos) / (time.perf_counter() - started)


def burst_seconds(settings: Settings, client: httpx.Client, burst: list[Path]) -> float:
    """A user's burst: `burst` uploaded all at once to the warm service once it is idle again;
    seconds from the first upload to the last READY."""
    time.sleep(2)  # the worker idle again, as between a user's uploads
    started = time.time()  # READY times come from Postgres's clock: the epoch, this machine's
    ids, _ = upload_all(client, burst, clients=len(burst))
    return max(at for at, _ in wait_ready(settings, ids)) - started
