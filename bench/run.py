"""`make bench` (CPU) and `make bench-gpu` (`--device cuda`): the model's ceiling, the decoders'
ceilings, a naive loop, the API's ingest and the service, measured in one run on the real stack.

Everything runs on this machine: embedded Postgres, Redis, `photoembed api` and `photoembed worker`
processes, ViT-B-32 loaded through OpenCLIP from a seeded offline cache (random weights: the
architecture and its cost are real, the vectors mean nothing). Ratios within one run are what to
compare; absolute numbers move with the machine.

CPU: each runtime's model-only ceiling (one pass over every core, and one single-threaded pass
per core side by side), the naive worker, the service end to end with the defaults (uploads to
READY), the worker draining a backlog with its defaults and with one pass over every core, and a
sweep of in-flight photos x batch size (x streams). CUDA: the image tower at
fp32/tf32/fp16 and several batch sizes, the decode ceilings (Pillow on every core, nvJPEG on the
GPU), a naive batch-of-one loop on the GPU, the API's ingest rate with 16 concurrent clients, and
the workers' backlog drain (first READY to last) for the defaults and a sweep of processes x
threads, on 2,000 or more photos. Writes bench/results.json (or bench/gpu-results.json).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import multiprocessing
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"

import httpx
import numpy as np
import psutil
import psycopg
from PIL import Image
from prometheus_client import REGISTRY
from pydantic import SecretStr

REPO = Path(__file__).resolve().parents[1]

import events_cost  # noqa: E402  (bench/events_cost.py, beside this script)
import importing  # noqa: E402  (bench/importing.py, beside this script)

from photoembed.cli.database import migrate  # noqa: E402
from photoembed.cli.serve import api_processes  # noqa: E402
from photoembed.clip.runtimes.onnx_runtime import OnnxEmbedder  # noqa: E402
from photoembed.clip.runtimes.torch_runtime import ClipEmbedder  # noqa: E402
from photoembed.clip.weights_files import ensure_random_weights, seed_hf_cache  # noqa: E402
from photoembed.config import Settings  # noqa: E402
from photoembed.devstack import (  # noqa: E402
    LocalPostgres,
    LocalRedis,
    ServiceProcess,
    free_port,
    machine_memory,
    postgres_memory_settings,
    settings_env,
)
from photoembed.faces import samples as face_samples  # noqa: E402
from photoembed.faces.dlib_model import DlibFaceModel  # noqa: E402
from photoembed.images import DecodeLimits, load_rgb, read_jpeg_header  # noqa: E402
from photoembed.samples import encode, library_tree, make_photo  # noqa: E402
from photoembed.sizing import plan_sizing, resolve  # noqa: E402
from photoembed.webhooks.secrets import new_encryption_key  # noqa: E402

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


# --- model, decode and naive ceilings (in this process) ------------------------------------------


def measure_ceiling(
    embedder: Any, batch_sizes: list[int], seconds: float = 3.0, streams: int = 1
) -> dict[int, float]:
    """Images/s of the model alone on preprocessed pixels, `streams` passes running side by side."""
    return {size: _model_rate(embedder, size, seconds, streams) for size in batch_sizes}


def _model_rate(embedder: Any, size: int, seconds: float, streams: int) -> float:
    batch = np.random.default_rng(size).standard_normal((size, 3, 224, 224), np.float32)
    embedder.embed_pixels(batch)  # warm-up
    runs = [0] * streams
    started = time.perf_counter()

    def run(stream: int) -> None:
        while runs[stream] < 2 or time.perf_counter() - started < seconds:
            embedder.embed_pixels(batch)
            runs[stream] += 1

    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(run, range(streams)))
    return size * sum(runs) / (time.perf_counter() - started)


def measure_naive(embedder: ClipEmbedder, photos: list[Path]) -> float:
    """The first version of such a worker: full decode, OpenCLIP's preprocessing, one at a time."""
    embedder.embed_pixels(embedder.preprocess(Image.new("RGB", (224, 224)))[None])
    started = time.perf_counter()
    for path in photos:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        embedder.embed_pixels(embedder.preprocess(rgb)[None])
    return len(photos) / (time.perf_counter() - started)


def _pillow_decode(args: tuple[str, int]) -> float:
    path, draft = args
    image, info = load_rgb(Path(path).read_bytes(), DecodeLimits(10**9, 1, draft))
    from photoembed.quality import quality_score

    quality_score(image, (info.width, info.height))
    image.resize((224, 224), Image.Resampling.BICUBIC)
    return time.perf_counter()


def measure_cpu_decode(photos: list[Path], draft_side: int, processes: int) -> float:
    """Pillow's reduced decode, the quality score and a resize, on `processes` cores."""
    jobs = [(str(p), draft_side) for p in photos]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_pillow_decode, jobs[:processes])  # warm-up
        started = time.perf_counter()
        pool.map(_pillow_decode, jobs, chunksize=4)
    return len(jobs) / (time.perf_counter() - started)


def measure_gpu_decode(embedder: ClipEmbedder, photos: list[Path], batch: int) -> float:
    """nvJPEG batched decode, orientation, resize, crop, normalise and quality on the GPU."""
    from photoembed.clip import device_decode
    from photoembed.clip.preprocessing import preprocessing_of

    prep = preprocessing_of(embedder.load().preprocess)
    items = []
    for path in photos:
        data = path.read_bytes()
        header = read_jpeg_header(data)
        if header is not None:
            items.append(device_decode.EncodedJpeg(data, header))
    device_decode.decode_for_model(items[:8], prep, "cuda")  # warm-up
    import torch

    torch.cuda.synchronize()
    started = time.perf_counter()
    for start in range(0, len(items), batch):
        device_decode.decode_for_model(items[start : start + batch], prep, "cuda")
    torch.cuda.synchronize()
    return len(items) / (time.perf_counter() - started)


def decode_parity(embedder: ClipEmbedder, photos: list[Path], draft_side: int) -> dict[str, float]:
    """How far the service's decode (DECODE_DRAFT_SIDE) moves embeddings from a full decode; the
    product's bound is 2e-4 (max abs)."""
    worst_abs, worst_cos = 0.0, 1.0
    for path in photos:
        with Image.open(path) as image:
            full = embedder.embed_images([image.convert("RGB")], exact=True)[0]
        drafted, _ = load_rgb(path.read_bytes(), DecodeLimits(10**9, 1, draft_side))
        fast = embedder.embed_images([drafted], exact=True)[0]
        worst_abs = max(worst_abs, float(np.abs(full - fast).max()))
        worst_cos = min(worst_cos, float(np.dot(full, fast)))
    return {"max_abs_diff": worst_abs, "min_cosine": worst_cos}


def gpu_decode_parity(embedder: ClipEmbedder, photos: list[Path]) -> dict[str, float]:
    """How far decoding on the GPU moves embeddings from a full Pillow decode."""
    from photoembed.clip import device_decode
    from photoembed.clip.preprocessing import preprocessing_of

    prep = preprocessing_of(embedder.load().preprocess)
    worst_abs, worst_cos = 0.0, 1.0
    for path in photos:
        data = path.read_bytes()
        header = read_jpeg_header(data)
        if header is None:
            continue
        with Image.open(path) as image:
            full = embedder.embed_images([image.convert("RGB")], exact=True)[0]
        ((pixels, _),) = device_decode.decode_for_model(
            [device_decode.EncodedJpeg(data, header)], prep, "cuda"
        )
        assert not isinstance(pixels, BaseException)
        fast = embedder.embed_pixels(pixels[None].cpu().numpy(), exact=True)[0]
        worst_abs = max(worst_abs, float(np.abs(full - fast).max()))
        worst_cos = min(worst_cos, float(np.dot(full, fast)))
    return {"max_abs_diff": worst_abs, "min_cosine": worst_cos}


# --- the running service ------------------------------------------------------------------------


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


def _libpq(settings: Settings) -> str:
    return settings.database_url.replace("postgresql+psycopg", "postgresql")


def wait_ready(
    settings: Settings, ids: list[str], timeout: float = 900
) -> list[tuple[float, float]]:
    """Wait (one SQL query per poll) and return each photo's (READY time, upload-to-READY ms)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(_libpq(settings), autocommit=True) as conn:
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


def _libpq_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg", "postgresql")


def fresh_database(stack: Stack, prefix: str) -> str:
    """A new, migrated database on the run's server (for what must see only its own photos)."""
    database = f"{prefix}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(_libpq_url(stack.database_url), autocommit=True) as conn:
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


def measure_service(
    stack: Stack, settings: Settings, photos: list[Path], light: int, profile: Path | None
) -> dict[str, Any]:
    """Uploads (4 clients) while the worker runs: the service end to end, as a user sees it."""
    with ExitStack() as running:
        api = start_api(stack, settings, "api", running)
        client = client_for(settings)
        first = upload(client, photos[0])
        boot_started = time.perf_counter()
        worker = stack.start("worker", settings, "worker")
        running.callback(worker.stop)
        assert worker.process is not None
        rss = PeakRss(worker.process.pid)
        rss.start()
        running.callback(rss.done.set)
        wait_ready(settings, [first])
        boot_to_first_ready = time.perf_counter() - boot_started
        light_ms = [wait_ready(settings, [upload(client, p)])[0][1] for p in photos[1 : 1 + light]]
        profiler = Profiler(worker.process.pid, profile) if profile else None
        assert api.process is not None
        before = _cpu_split(stack, api.process.pid, worker.process.pid)
        threads_before = thread_cpu_seconds(worker.process.pid)
        started = time.perf_counter()
        ids, _ = upload_all(client, photos, clients=4)
        ready = wait_ready(settings, ids)
        elapsed = time.perf_counter() - started
        after = _cpu_split(stack, api.process.pid, worker.process.pid)
        threads_after = thread_cpu_seconds(worker.process.pid)
        hottest = profiler.stop() if profiler else []
        stages = worker_stages(settings.metrics_port)
    cpu_ms = {name: round((after[name] - before[name]) / len(photos) * 1000, 1) for name in after}
    # The inference streams are the worker's busiest threads by far (ONNX Runtime's own pool
    # threads among them when a pass has several); the photo threads decode, claim and store.
    per_thread = sorted(
        (
            (spent - threads_before.get(tid, 0.0)) / len(photos) * 1000
            for tid, spent in threads_after.items()
        ),
        reverse=True,
    )
    sizing = plan_sizing(settings)
    inference_threads = sizing.inference_streams * sizing.inference_threads
    return {
        "photos_per_s": len(photos) / elapsed,
        "cpu_ms_per_photo": cpu_ms,
        "worker_cpu_ms_per_photo": {
            "busiest_threads": [round(ms, 1) for ms in per_thread[:inference_threads]],
            "all_other_threads": round(sum(per_thread[inference_threads:]), 1),
        },
        "cores_busy": round(sum(after[n] - before[n] for n in after) / elapsed, 2),
        "latency_p50_ms": percentile(light_ms, 50),
        "latency_p95_ms": percentile(light_ms, 95),
        "backlog_latency_p50_ms": percentile([ms for _, ms in ready], 50),
        "backlog_latency_p95_ms": percentile([ms for _, ms in ready], 95),
        "worker_peak_rss_mb": rss.peak / 2**20,
        "boot_to_first_ready_s": boot_to_first_ready,
        "worker_stages": stages,
        "profile_hottest_frames": hottest,
    }


def _cpu_split(stack: Stack, api_pid: int, worker_pid: int) -> dict[str, float]:
    return {
        "api": cpu_seconds(api_pid),
        "worker": cpu_seconds(worker_pid),
        "postgres_and_redis": database_cpu_seconds(stack),
        "bench_clients": sum(psutil.Process().cpu_times()[:2]),
    }


def measure_ingest(stack: Stack, settings: Settings, photos: list[Path], clients: int) -> float:
    """Uploads per second through the API alone (no worker running)."""
    with ExitStack() as running:
        start_api(stack, settings, "api-ingest", running)
        client = client_for(settings)
        upload(client, photos[0])  # warm
        _, rate = upload_all(client, photos, clients)
    return rate


def measure_drain(
    stack: Stack, settings: Settings, photos: list[Path], clients: int = 16
) -> dict[str, Any]:
    """A backlog uploaded first, then the worker started: photos/s from first READY to last."""
    with ExitStack() as running:
        start_api(stack, settings, "api-drain", running)
        ids, ingest = upload_all(client_for(settings), photos, clients)
        worker = stack.start("worker", settings, "worker-drain")
        running.callback(worker.stop)
        started = time.perf_counter()
        ready = sorted(at for at, _ in wait_ready(settings, ids, timeout=1800))
        stages = worker_stages(settings.metrics_port)
    drain = (len(ready) - 1) / max(1e-9, ready[-1] - ready[0])
    return {
        "drain_photos_per_s": drain,
        "start_to_last_ready_s": time.perf_counter() - started,
        "ingest_photos_per_s": ingest,
        "worker_stages": stages,
    }


# --- faces ----------------------------------------------------------------------------------------


def face_cases() -> list[tuple[str, Image.Image, list[str]]]:
    """(name, photo, who is in it left to right): the package faces, their variants, group
    photos pasted from several faces, and photos without a face."""
    faces = face_samples.real_faces()
    cases = []
    for person, image in faces.items():
        cases.append((f"{person}/original", image, [person]))
        side = face_samples.FACE_SIDE[person]
        for variant, changed in face_samples.variants(image, side).items():
            cases.append((f"{person}/{variant}", changed, [person]))
    for people, height in (
        (["astronaut", "hopper"], 420),
        (["hopper", "astronaut"], 300),
        (["hopper", "astronaut", "hopper"], 260),
        (["astronaut", "hopper", "astronaut"], 200),
        (["astronaut", "hopper", "cameraman"], 420),
        (["cameraman", "hopper", "astronaut"], 260),
    ):
        group = face_samples.group_photo(people, faces, height)
        cases.append((f"group/{'+'.join(people)}@{height}", group, people))
    cases += [(f"no-face/{n}", image, []) for n, image in face_samples.no_face_photos().items()]
    return cases


def _face_side(name: str) -> int:
    """The face's width in the case, for the 60 px goal (the scaled variants are smaller)."""
    match = re.search(r"face-(\d+)px", name)
    return int(match.group(1)) if match else 60


def face_accuracy(cases: list[tuple[str, Image.Image, list[str]]]) -> dict[str, Any]:
    """The dlib model in this process, on one core: detection recall (a face found within the
    match distance of that person's original face), false faces, and the CPU it took."""
    model = DlibFaceModel(resolve(Settings()))
    model.load()
    originals = {}
    for name, image, people in cases:
        if name.endswith("/original"):
            found = model.find_faces(image)
            originals[people[0]] = max(found, key=lambda f: f.box[2]).vector
    expected = found_ok = small_expected = small_found = false_on_faces = 0
    false_on_empty, misses, faces_found = [], [], 0
    started = time.process_time()
    for name, image, people in cases:
        found = model.find_faces(image)
        faces_found += len(found)
        unmatched = list(found)
        for person in people:
            near = [
                f
                for f in unmatched
                if np.linalg.norm(f.vector - originals[person]) < model.match_distance()
            ]
            small = _face_side(name) < 60
            expected += not small
            small_expected += small
            if near:
                unmatched.remove(near[0])
                found_ok += not small
                small_found += small
            else:
                misses.append(name)
        if people:
            false_on_faces += len(unmatched)
        elif unmatched:
            false_on_empty.append(name)
    seconds = time.process_time() - started
    face_photos = sum(1 for _, _, people in cases if people)
    steps = {
        step: 1000
        * (REGISTRY.get_sample_value("photoembed_face_step_seconds_sum", {"step": step}) or 0)
        for step in ("scale", "detect", "align", "describe")
    }
    return {
        "photos": len(cases),
        "recall_faces_60px_or_more": found_ok / expected,
        "recall_faces_40_to_50px": small_found / small_expected,
        "missed": misses,
        "false_faces_per_photo_with_faces": false_on_faces / face_photos,
        "photos_without_a_face": len(cases) - face_photos,
        "false_faces_on_photos_without_a_face": false_on_empty,
        "cpu_ms_per_photo": 1000 * seconds / len(cases),
        "faces_per_s_per_core": faces_found / seconds,
        "ms_per_photo": {step: round(steps[step] / len(cases), 1) for step in ("scale", "detect")},
        "ms_per_face": {
            step: round(steps[step] / max(1, faces_found), 1) for step in ("align", "describe")
        },
    }


def _upload_image(client: httpx.Client, image: Image.Image) -> str:
    response = client.post("/photos", files={"file": ("face.jpg", encode(image, quality=92))})
    response.raise_for_status()
    photo_id: str = response.json()["id"]
    return photo_id


def wait_faces(settings: Settings, ids: list[str], timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(_libpq(settings), autocommit=True) as conn:
        while time.monotonic() < deadline:
            done = conn.execute(
                "SELECT count(*) FROM photos WHERE id = ANY(%s::uuid[]) "
                "AND faces_status IN ('DONE', 'FAILED')",
                (ids,),
            ).fetchone()
            if done and done[0] == len(ids):
                return
            time.sleep(0.2)
    raise SystemExit(f"faces not done after {timeout}s")


def face_grouping(stack: Stack, cases: list[tuple[str, Image.Image, list[str]]]) -> dict[str, Any]:
    """Every case uploaded, unlabelled, to the real service on a database of its own; the
    automatic grouping scored against who is in each photo: purity (the share of grouped faces
    whose person holds mostly that identity) and completeness (the share of each identity's
    faces in its largest person)."""
    settings = stack.settings(database_url=fresh_database(stack, "faces"), faces_enabled=True)
    truth: dict[str, list[str]] = {}
    with ExitStack() as running:
        start_api(stack, settings, "api-faces", running)
        worker = stack.start("worker", settings, "worker-faces")
        running.callback(worker.stop)
        client = client_for(settings)
        for _, image, people in cases:
            truth[_upload_image(client, image)] = people
        wait_faces(settings, list(truth))
    with psycopg.connect(_libpq(settings)) as conn:
        rows = conn.execute(
            "SELECT photo_id::text, box_x, person_id::text FROM faces ORDER BY photo_id, box_x"
        ).fetchall()
    by_photo: dict[str, list[str | None]] = {}
    for photo_id, _, person_id in rows:
        by_photo.setdefault(photo_id, []).append(person_id)
    labelled: list[tuple[str, str | None]] = []  # (identity, person) for faces we can name
    unlabelled = 0
    for photo_id, people in truth.items():
        persons = by_photo.get(photo_id, [])
        if len(persons) == len(people):
            labelled += list(zip(people, persons, strict=True))
        else:
            unlabelled += len(persons)
    grouped = [(who, person) for who, person in labelled if person is not None]
    clusters: dict[str, list[str]] = {}
    for who, person in grouped:
        clusters.setdefault(person, []).append(who)  # type: ignore[arg-type]
    majority = sum(max(members.count(w) for w in set(members)) for members in clusters.values())
    identities = {who for who, _ in labelled}
    complete = 0
    for who in identities:
        persons = [person for w, person in labelled if w == who]
        complete += max(persons.count(p) for p in set(persons))
    strays = {
        who: len([p for w, p in labelled if w == who and p != _main(labelled, who)])
        for who in identities
    }
    return {
        "faces_labelled": len(labelled),
        "faces_in_photos_with_unexpected_counts": unlabelled,
        "persons": len(clusters),
        "purity": majority / len(grouped) if grouped else 0.0,
        "completeness": complete / len(labelled) if labelled else 0.0,
        "faces_not_in_their_persons_main_group": strays,
    }


def _main(labelled: list[tuple[str, str | None]], who: str) -> str | None:
    persons = [person for w, person in labelled if w == who]
    return max(set(persons), key=persons.count)


def face_cost(stack: Stack, photos: list[Path], rounds: int = 2) -> dict[str, Any]:
    """A backlog drained with the face stage off and on, alternating, `rounds` times each (this
    machine drifts by 10-30% within a run; each side keeps its best round, as the ceilings and
    the service do): the CLIP stage's drain rate (first READY to last) both ways, and the
    worker's CPU per photo until the faces are done too."""
    result: dict[str, Any] = {}
    for _round, faces_on in itertools.product(range(rounds), (False, True)):
        settings = stack.settings(faces_enabled=faces_on)
        with ExitStack() as running:
            start_api(stack, settings, "api-face-cost", running)
            ids, _ = upload_all(client_for(settings), photos, clients=16)
            worker = stack.start("worker", settings, "worker-face-cost")
            running.callback(worker.stop)
            assert worker.process is not None
            worker.wait_for_log("Worker process is ready", timeout=300)
            before = cpu_seconds(worker.process.pid)
            ready = sorted(at for at, _ in wait_ready(settings, ids, timeout=1800))
            if faces_on:
                wait_faces(settings, ids)
            spent = cpu_seconds(worker.process.pid) - before
            text = httpx.get(f"http://127.0.0.1:{settings.metrics_port}/", timeout=10).text
        key = "faces_on" if faces_on else "faces_off"
        drain = (len(ready) - 1) / max(1e-9, ready[-1] - ready[0])
        result.setdefault(f"{key}_rounds", []).append(round(drain, 2))
        if drain < result.get(key, {}).get("drain_photos_per_s", 0.0):
            continue
        result[key] = {
            "drain_photos_per_s": drain,
            "worker_cpu_ms_per_photo": 1000 * spent / len(photos),
        }
        if faces_on:
            result[key]["face_steps_ms_per_photo"] = {
                step: round(1000 * float(value) / len(photos), 1)
                for step, value in re.findall(
                    r'^photoembed_face_step_seconds_sum{step="(\w+)"} ([0-9.e+-]+)$', text, re.M
                )
            }
    off, on = result["faces_off"], result["faces_on"]
    result["faces_on_vs_off"] = on["drain_photos_per_s"] / off["drain_photos_per_s"]
    result["drain_lost_share"] = 1 - result["faces_on_vs_off"]
    result["face_cpu_share"] = 1 - off["worker_cpu_ms_per_photo"] / on["worker_cpu_ms_per_photo"]
    return result


def run_faces(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    cases = face_cases()
    photos = photo_set(REPO / ".cache" / "bench-photos", CPU_MIX, args.photos)
    return {
        "accuracy": face_accuracy(cases),
        "grouping": face_grouping(stack, cases),
        "cost": face_cost(stack, photos),
    }


def print_faces(faces: dict[str, Any]) -> None:
    accuracy, grouping, cost = faces["accuracy"], faces["grouping"], faces["cost"]
    print(
        f"\nfaces: recall {accuracy['recall_faces_60px_or_more']:.2f} (60 px or more, goal 1), "
        f"{accuracy['recall_faces_40_to_50px']:.2f} (40-50 px); false faces "
        f"{accuracy['false_faces_per_photo_with_faces']:.2f} per photo with faces, "
        f"{len(accuracy['false_faces_on_photos_without_a_face'])} on "
        f"{accuracy['photos_without_a_face']} photos without one (goal 0); "
        f"{accuracy['faces_per_s_per_core']:.1f} faces/s per core, "
        f"{accuracy['cpu_ms_per_photo']:.0f} CPU ms per photo (scale "
        f"{accuracy['ms_per_photo']['scale']} and detect {accuracy['ms_per_photo']['detect']}"
        f" ms a photo; align "
        f"{accuracy['ms_per_face']['align']} and describe {accuracy['ms_per_face']['describe']}"
        f" ms a face)"
    )
    print(
        f"grouping: purity {grouping['purity']:.2f}, completeness {grouping['completeness']:.2f} "
        f"over {grouping['faces_labelled']} faces in {grouping['persons']} persons"
    )
    print(
        f"photos to READY (a backlog drained): {cost['faces_on']['drain_photos_per_s']:.2f} "
        f"photos/s with the defaults (faces on) = {cost['faces_on_vs_off']:.2f}x the "
        f"{cost['faces_off']['drain_photos_per_s']:.2f} with faces off (goal 0.9; best of rounds "
        f"{cost['faces_on_rounds']} and {cost['faces_off_rounds']})"
        + (
            f", {cost['faces_on_vs_naive']:.2f}x the naive loop (goal 1.3)"
            if "faces_on_vs_naive" in cost
            else ""
        )
        + f"; the face stage's share of the worker's CPU {cost['face_cpu_share']:.0%}; "
        f"face steps, CPU ms a photo: {cost['faces_on'].get('face_steps_ms_per_photo')}"
    )


# --- import ---------------------------------------------------------------------------------------


def _all_ids(settings: Settings) -> list[str]:
    with psycopg.connect(_libpq(settings)) as conn:
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
            run = importing.run_import(url, key_file, str(library))
            ready = sorted(at for at, _ in wait_ready(settings, _all_ids(settings), timeout=1800))
        assert run.summary["uploaded"] == made.photos, run.summary
        client_cpu.append(1000 * run.cpu_seconds / made.photos)
        return (len(ready) - 1) / max(1e-9, ready[-1] - ready[0])

    def drain() -> float:
        settings = stack.settings(database_url=fresh_database(stack, "drain"))
        with ExitStack() as running:
            start_api(stack, settings, "api-import-drain", running)
            url = str(client_for(settings).base_url)
            importing.run_import(url, key_file, str(library), "--max-backlog", "0")
            worker = stack.start("worker", settings, "worker-import-drain")
            running.callback(worker.stop)
            ready = sorted(at for at, _ in wait_ready(settings, _all_ids(settings), timeout=1800))
        return (len(ready) - 1) / max(1e-9, ready[-1] - ready[0])

    result: dict[str, Any] = importing.import_vs_drain(import_to_ready, drain)
    large = stack.workdir / "import-large"
    library_tree(large, args.import_large, side=24, seed=3)
    settings = stack.settings(database_url=fresh_database(stack, "importmem"))
    with ExitStack() as running:
        start_api(stack, settings, "api-import-large", running)
        url = str(client_for(settings).base_url)
        big = importing.run_import(url, key_file, str(large), "--max-backlog", "0")
        again = importing.run_import(url, key_file, str(large), "--max-backlog", "0")
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


# --- the two runs -------------------------------------------------------------------------------


def webhook_cost(stack: Stack, count: int, rounds: int = 4) -> dict[str, Any]:
    """A backlog of twice `count` photos (a drain of a few seconds) drained with no webhook and
    with one (bench/events_cost.py), alternating. Besides the drain (best of the rounds, as
    elsewhere; a few seconds of it move by some percent from round to round), the CPU the whole
    worker spent a photo from its start to the last READY (and the last delivery), and the
    events process's part of it (mean of the rounds): the steadier measure of what the outbox
    and the webhooks cost."""
    photos = photo_set(REPO / ".cache" / "bench-photos", CPU_MIX, 2 * count)
    result: dict[str, Any] = {}
    cpu: dict[str, list[tuple[float, float]]] = {"with_webhook": [], "without_webhook": []}
    key = SecretStr(new_encryption_key())
    for _round, hooked in itertools.product(range(rounds), (False, True)):
        settings = stack.settings(encryption_key=key, webhook_allow_private=True)
        receiver = events_cost.Arrivals()
        with ExitStack() as running:
            running.callback(receiver.close)
            start_api(stack, settings, "api-events", running)
            client = client_for(settings)
            if hooked:
                made = client.post(
                    "/webhooks",
                    json={"url": f"http://127.0.0.1:{receiver.port}/", "events": ["photo.ready"]},
                )
                made.raise_for_status()
            ids, _ = upload_all(client, photos, clients=16)
            worker = stack.start("worker", settings, "worker-events")
            running.callback(worker.stop)
            worker.wait_for_log("Worker process is ready", timeout=300)
            # the CPU from here (a start, and a model exported on the first, is not the photos')
            worker.wait_for_log("selfcheck.passed", timeout=300)
            worker_pid = worker.process.pid if worker.process else 0
            events_pid = events_cost.events_process(worker_pid)
            booted = cpu_seconds(worker_pid), cpu_seconds(events_pid)
            ready = wait_ready(settings, ids, timeout=1800)
            if hooked:
                deadline = time.monotonic() + 300
                while set(ids) - set(receiver.at) and time.monotonic() < deadline:
                    time.sleep(0.2)
                client.delete(f"/webhooks/{made.json()['id']}")
            worker_cpu = cpu_seconds(worker_pid) - booted[0]
            events_cpu = cpu_seconds(events_pid) - booted[1]
        side = "with_webhook" if hooked else "without_webhook"
        cpu[side].append((worker_cpu / len(ids), events_cpu / len(ids)))
        times = sorted(at for at, _ in ready)
        ready_at = events_cost.ready_times(settings.database_url, ids)
        drain = (len(times) - 1) / max(1e-9, times[-1] - times[0])
        result.setdefault(f"{side}_rounds", []).append(round(drain, 2))
        if drain < result.get(side, {}).get("drain_photos_per_s", 0.0):
            continue
        result[side] = {"drain_photos_per_s": drain}
        if hooked:
            late = [receiver.at[p] - ready_at[p] for p in ids if p in receiver.at and p in ready_at]
            result[side].update(
                {
                    "delivered": len(late),
                    "ready_to_receiver_s": {
                        "p50": round(percentile(late, 50), 2),
                        "p95": round(percentile(late, 95), 2),
                    },
                }
            )
    for side, measured in cpu.items():
        result[side]["worker_cpu_ms_per_photo"] = round(
            1000 * statistics.mean(total for total, _ in measured), 2
        )
        result[side]["events_process_cpu_ms_per_photo"] = round(
            1000 * statistics.mean(events for _, events in measured), 2
        )
    result["with_vs_without"] = (
        result["with_webhook"]["drain_photos_per_s"]
        / result["without_webhook"]["drain_photos_per_s"]
    )
    result["with_vs_without_mean_of_rounds"] = statistics.mean(
        result["with_webhook_rounds"]
    ) / statistics.mean(result["without_webhook_rounds"])
    # the worker's CPU a photo with the webhook over without it, and the events process's
    # share of the worker's CPU with the webhook (the outbox's numbering and the sends)
    result["cpu_with_vs_without"] = (
        result["with_webhook"]["worker_cpu_ms_per_photo"]
        / result["without_webhook"]["worker_cpu_ms_per_photo"]
    )
    result["events_share_of_worker_cpu"] = (
        result["with_webhook"]["events_process_cpu_ms_per_photo"]
        / result["with_webhook"]["worker_cpu_ms_per_photo"]
    )
    result["outbox_write_us"] = round(events_cost.outbox_write_us(stack.database_url), 1)
    settings = stack.settings(encryption_key=key, webhook_allow_private=True)
    result["send_cpu_ms"] = round(events_cost.send_cpu_ms(settings), 3)
    return result


def run_cpu(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    import torch

    photos = photo_set(REPO / ".cache" / "bench-photos", CPU_MIX, args.photos)
    defaults = resolve(stack.settings())
    planned = plan_sizing(defaults)
    cores = os.cpu_count() or 1
    # One pass over every core: the streams' threads follow from their number.
    one_pass = {"inference_streams": 1}
    torch_embedder = ClipEmbedder(stack.settings(clip_device="cpu"))
    torch_embedder.load()
    onnx_embedder = OnnxEmbedder(defaults)
    onnx_embedder.load()  # exports once; the workers then find it in the cache
    parity = decode_parity(
        torch_embedder, [p for p in photos[:12] if p.suffix == ".jpeg"], defaults.decode_draft_side
    )

    # The model alone, each way it can run on these cores: one pass over all of them, or one
    # single-threaded pass per core side by side (ONNX Runtime's default here; torch's threads are
    # set for the whole process, so its side-by-side run sets them to 1 for the while).
    ceiling_runs: dict[str, tuple[Any, int, int]] = {
        "torch": (torch_embedder, cores, 1),
        "torch_side_by_side": (torch_embedder, 1, cores),
        "onnx": (OnnxEmbedder(resolve(stack.settings(**one_pass))), cores, 1),
        "onnx_side_by_side": (onnx_embedder, 1, cores),
    }

    def ceilings_now(runs: dict[str, tuple[Any, int, int]]) -> dict[str, dict[int, float]]:
        rates = {}
        for name, (embedder, threads, streams) in runs.items():
            torch.set_num_threads(threads)
            rates[name] = measure_ceiling(embedder, [1, 8, 16, 32], streams=streams)
        torch.set_num_threads(cores)
        return rates

    # The ceilings, the naive loop and the service are each measured twice, one after the other
    # (this machine's speed drifts within a run), and each keeps its better figure (per batch
    # size for the ceilings), so that no side of a ratio gets a second chance the other lacks.
    ceilings = ceilings_now(ceiling_runs)
    naive = measure_naive(torch_embedder, photos[:12])
    service = measure_service(stack, stack.settings(), photos, args.light, args.profile)
    for name, again in ceilings_now(ceiling_runs).items():
        ceilings[name] = {size: max(rate, again[size]) for size, rate in ceilings[name].items()}
    naive = max(naive, measure_naive(torch_embedder, photos[:12]))
    service_again = measure_service(stack, stack.settings(), photos, args.light, profile=None)
    if service_again["photos_per_s"] > service["photos_per_s"]:
        service = service_again
    del ceiling_runs, onnx_embedder, torch_embedder
    best_ceiling = max(max(rates.values()) for rates in ceilings.values())
    # The worker alone on a backlog (uploaded before it starts): its defaults against one pass
    # spread over every core.
    drain = {
        "defaults": measure_drain(stack, stack.settings(), photos)["drain_photos_per_s"],
        "one_pass": measure_drain(stack, stack.settings(**one_pass), photos)["drain_photos_per_s"],
    }
    sweep = []
    for threads, batch, *asked in args.sweep:
        sized = {"worker_threads": threads, "embed_batch_size": batch}
        if asked:
            sized["inference_streams"] = asked[0]
        run = measure_service(stack, stack.settings(**sized), photos, args.light, profile=None)
        sweep.append(
            {
                "threads": threads,
                "batch_size": batch,
                "streams": asked[0] if asked else planned.inference_streams,
                **_summary(run),
            }
        )
    return {
        "device": "cpu",
        "defaults": {
            "runtime": defaults.embed_runtime,
            "threads": defaults.worker_threads,
            "batch_size": defaults.embed_batch_size,
            "inference_streams": planned.inference_streams,
            "inference_threads": planned.inference_threads,
            "draft_side": defaults.decode_draft_side,
        },
        "service": service,
        "service_vs_best_ceiling": service["photos_per_s"] / best_ceiling,
        "service_vs_naive": service["photos_per_s"] / naive,
        # What the CPU the service spent per photo (worker, API, databases, bench clients) would
        # allow with every core busy: the gap above it is work per photo, below it idle cores.
        "service_bound_vs_best_ceiling": cores
        * 1000
        / sum(service["cpu_ms_per_photo"].values())
        / best_ceiling,
        "naive_photos_per_s": naive,
        "drain_photos_per_s": drain,
        "ceilings": {
            name: {"best": max(r.values()), "by_batch": r} for name, r in ceilings.items()
        },
        "sweep": sweep,
        "default_decode_parity": parity,
    }


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "photos_per_s": round(run["photos_per_s"], 2),
        "mean_batch_size": round(run["worker_stages"]["mean_batch_size"], 1),
        "light_latency_p50_ms": round(run["latency_p50_ms"]),
    }


def run_gpu(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    import torch

    photos = photo_set(REPO / ".cache" / "bench-photos-gpu", GPU_MIX, args.photos)
    defaults = plan_sizing(stack.settings())

    def embedder_at(precision: str) -> ClipEmbedder:
        embedder = ClipEmbedder(
            resolve(stack.settings(clip_device="cuda", clip_precision=precision))
        )
        embedder.load()
        return embedder

    from photoembed.clip.probe import probe_image

    ceilings: dict[str, dict[int, float]] = {}
    precision_probe: dict[str, float] = {}
    embedder = embedder_at("fp32")
    exact = embedder.embed_images([probe_image()], exact=True)[0]
    for precision in ("fp32", "tf32", "fp16", "bf16"):
        reduced = embedder_at(precision)
        ceilings[precision] = measure_ceiling(reduced, [16, 64, 256, 1024], seconds=2.0)
        moved = np.abs(reduced.embed_images([probe_image()])[0] - exact).max()
        precision_probe[precision] = float(moved)
        del reduced
        torch.cuda.empty_cache()
    naive = measure_naive(embedder, photos[:48])
    cores = os.cpu_count() or 1
    draft_side = stack.settings().decode_draft_side
    decode = {
        "pillow_all_cores": measure_cpu_decode(photos[:400], draft_side, cores),
        "gpu_nvjpeg": measure_gpu_decode(embedder, photos[:400], batch=256),
    }
    parity = {
        "gpu_decode_vs_full": gpu_decode_parity(embedder, photos[:24]),
        "default_decode_vs_full": decode_parity(
            embedder, [p for p in photos[:24] if p.suffix == ".jpeg"], draft_side
        ),
    }
    del embedder
    torch.cuda.empty_cache()

    ingest = measure_ingest(stack, stack.settings(), photos, clients=16)
    default_drain = measure_drain(stack, stack.settings(), photos)
    sweep = [{"processes": defaults.processes, "threads": defaults.threads, **default_drain}]
    for processes, threads in args.gpu_sweep:
        if (processes, threads) == (defaults.processes, defaults.threads):
            continue
        run = measure_drain(
            stack, stack.settings(worker_processes=processes, worker_threads=threads), photos
        )
        sweep.append({"processes": processes, "threads": threads, **run})
    best = max(sweep, key=lambda run: run["drain_photos_per_s"])
    return {
        "device": torch.cuda.get_device_name(0),
        "defaults": {
            "processes": defaults.processes,
            "threads": defaults.threads,
            "batch_size": defaults.batch_size,
            "precision": defaults.precision,
            "jpeg_decoder": defaults.jpeg_decoder,
        },
        "ceilings": {name: {"by_batch": rates} for name, rates in ceilings.items()},
        "decode_ceilings_photos_per_s": decode,
        "naive_gpu_batch_1_photos_per_s": naive,
        "api_ingest_16_clients_photos_per_s": ingest,
        "drain_default_photos_per_s": default_drain["drain_photos_per_s"],
        "drain_best": {k: best[k] for k in ("processes", "threads", "drain_photos_per_s")},
        "default_vs_best": default_drain["drain_photos_per_s"] / best["drain_photos_per_s"],
        "drain_sweep": [
            {k: run[k] for k in ("processes", "threads", "drain_photos_per_s")} for run in sweep
        ],
        "parity": parity,
        "precision_probe_max_abs_vs_fp32": precision_probe,
    }


def _pairs(text: str) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in pair.split("x")) for pair in text.split(",") if pair]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--photos", type=int, help="uploads per run (CPU 48, CUDA 2000)")
    parser.add_argument("--light", type=int, default=8, help="photos sent one at a time (CPU)")
    parser.add_argument(
        "--sweep",
        type=_pairs,
        default=_pairs("4x16,8x16,16x16,32x32,16x16x1"),
        help="CPU threadsxbatch[xstreams]",
    )
    parser.add_argument(
        "--gpu-sweep", type=_pairs, default=_pairs("1x128,2x128,4x128,8x64"),
        help="CUDA processesxthreads",
    )  # fmt: skip
    parser.add_argument("--output", type=Path)
    parser.add_argument("--profile", type=Path, help="py-spy the CPU worker (raw stacks)")
    parser.add_argument("--faces-only", action="store_true", help="only the face stage (CPU)")
    parser.add_argument("--import-only", action="store_true", help="only `photoembed import`")
    parser.add_argument("--events-only", action="store_true", help="only events and webhooks")
    parser.add_argument("--import-photos", type=int, default=1000, help="photos to import")
    parser.add_argument("--import-large", type=int, default=10_000, help="files for memory")
    args = parser.parse_args()
    gpu = args.device == "cuda"
    args.photos = args.photos or (2000 if gpu else 48)
    default_name = "gpu-results.json" if gpu else "results.json"
    if args.faces_only:
        default_name = "faces-results.json"
    if args.import_only:
        default_name = "import-results.json"
    if args.events_only:
        default_name = "events-results.json"
    output = args.output or REPO / "bench" / default_name

    with tempfile.TemporaryDirectory(prefix="photoembed-bench-") as tmp, Stack(Path(tmp)) as stack:
        started = time.perf_counter()
        if gpu:
            results = run_gpu(args, stack)
        elif args.faces_only:
            results = {"device": "cpu", "faces": run_faces(args, stack)}
        elif args.import_only:
            results = {"device": "cpu", "import": run_import_bench(args, stack)}
        elif args.events_only:
            results = {"device": "cpu", "events": webhook_cost(stack, args.photos)}
        else:
            results = run_cpu(args, stack)
            results["faces"] = run_faces(args, stack)
            cost = results["faces"]["cost"]
            cost["faces_on_vs_naive"] = (
                cost["faces_on"]["drain_photos_per_s"] / results["naive_photos_per_s"]
            )
            results["import"] = run_import_bench(args, stack)
            results["events"] = webhook_cost(stack, args.photos)
    results["run"] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "cores": os.cpu_count(),
        "photos": args.photos,
        "api_processes": api_processes(Settings()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    if "faces" in results:
        print_faces(results["faces"])
    if "import" in results:
        print_import(results["import"])
    if "events" in results:
        events_cost.print_events(results["events"])
    if not gpu and not args.faces_only and not args.import_only and not args.events_only:
        service = results["service"]
        print(
            f"\nservice {service['photos_per_s']:.2f} photos/s = "
            f"{results['service_vs_best_ceiling']:.2f}x the best model-only ceiling (goal 0.7), "
            f"{results['service_vs_naive']:.2f}x the naive loop (goal 2); "
            f"mean batch {service['worker_stages']['mean_batch_size']:.1f}"
        )
        print(
            f"CPU per photo (ms): {service['cpu_ms_per_photo']}, cores busy {service['cores_busy']}"
            f"; worker threads: {service['worker_cpu_ms_per_photo']}"
        )
        print(
            f"with every core busy, that CPU per photo allows at most "
            f"{results['service_bound_vs_best_ceiling']:.2f}x the ceiling"
        )
        drain = results["drain_photos_per_s"]
        print(
            f"backlog drain {drain['defaults']:.2f} photos/s with the defaults, "
            f"{drain['one_pass']:.2f} with one pass over all cores"
        )
        for row in results["sweep"]:
            print(
                f"  threads {row['threads']:>3} batch {row['batch_size']:>3} "
                f"streams {row['streams']}: {row['photos_per_s']} photos/s, "
                f"one at a time p50 {row['light_latency_p50_ms']} ms"
            )
    elif gpu:
        print(
            f"\ndrain {results['drain_default_photos_per_s']:.0f} photos/s with defaults "
            f"({results['default_vs_best']:.2f}x the best), ingest "
            f"{results['api_ingest_16_clients_photos_per_s']:.0f} photos/s"
        )
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
