"""`make bench`: the model's ceiling, the naive worker and the service, measured in one run.

Everything runs here, on the real stack: embedded Postgres, Redis, `photoembed api` and
`photoembed worker` processes, ViT-B-32 loaded through OpenCLIP from a seeded offline cache (random
weights: the architecture and its cost are real, the vectors mean nothing). Both image runtimes are
measured (EMBED_RUNTIME=torch and onnx), each against its own model-only ceiling; the top-level
keys are the onnx runtime's, which compose's CPU worker runs. Prints a table and writes bench/results.json. Ratios are what to
compare across machines; absolute numbers are not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"

import httpx
import numpy as np
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import (  # noqa: E402
    ServiceProcess,
    encode,
    make_photo,
    random_weights,
    seed_hf_cache,
    settings_env,
)

from photoembed.cli import migrate  # noqa: E402
from photoembed.clip.embedder import ClipEmbedder  # noqa: E402
from photoembed.clip.onnx_runtime import OnnxEmbedder  # noqa: E402
from photoembed.config import Settings  # noqa: E402
from photoembed.devstack import LocalPostgres, LocalRedis, free_port  # noqa: E402
from photoembed.images import load_rgb  # noqa: E402

API_KEY = "bench-key"
# A mix of what phones and cameras upload: (width, height, format, count per 12 photos).
MIX = [
    (4000, 3000, "JPEG", 3),
    (3000, 2000, "JPEG", 3),
    (1600, 1200, "JPEG", 3),
    (1024, 768, "PNG", 3),
]


def photo_set(folder: Path, count: int) -> list[Path]:
    """Generated once and kept in .cache/bench-photos (a 12 MP photo takes ~1 s to make)."""
    folder.mkdir(parents=True, exist_ok=True)
    kinds = [(w, h, fmt) for w, h, fmt, n in MIX for _ in range(n)]
    paths = []
    for i in range(count):
        width, height, fmt = kinds[i % len(kinds)]
        path = folder / f"{i:03d}-{width}x{height}.{fmt.lower()}"
        if not path.exists():
            options = {"quality": 90} if fmt == "JPEG" else {"compress_level": 1}
            path.write_bytes(encode(make_photo(1000 + i, (width, height)), fmt, **options))
        paths.append(path)
    return paths


def measure_ceiling(
    embedder: ClipEmbedder | OnnxEmbedder, batch_sizes: list[int]
) -> tuple[float, dict[int, float]]:
    rates = {}
    for size in batch_sizes:
        batch = np.random.default_rng(size).standard_normal((size, 3, 224, 224), np.float32)
        embedder.embed_pixels(batch)  # warm-up
        runs = max(2, 48 // size)
        started = time.perf_counter()
        for _ in range(runs):
            embedder.embed_pixels(batch)
        rates[size] = size * runs / (time.perf_counter() - started)
    return max(rates.values()), rates


def measure_naive(embedder: ClipEmbedder, photos: list[Path]) -> float:
    """The first version of such a worker: full decode, preprocess, batch of one, one at a time."""
    started = time.perf_counter()
    for path in photos:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        embedder.embed_pixels(embedder.preprocess(rgb).numpy()[None])
    return len(photos) / (time.perf_counter() - started)


def preprocessing_parity(embedder: ClipEmbedder, photos: list[Path]) -> dict[str, float]:
    """Draft decode (as the service does) against a full decode, both through OpenCLIP's
    preprocessing: how far apart are the embeddings?"""
    worst_abs, worst_cos = 0.0, 1.0
    for path in photos:
        with Image.open(path) as image:
            full = embedder.embed_images([image.convert("RGB")])[0]
        drafted, _ = load_rgb(path, max_pixels=10**9, min_side=1, draft_side=448)
        fast = embedder.embed_images([drafted])[0]
        worst_abs = max(worst_abs, float(np.abs(full - fast).max()))
        worst_cos = min(worst_cos, float(np.dot(full, fast)))
    return {"max_abs_diff": worst_abs, "min_cosine": worst_cos}


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


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def wait_ready(database_url: str, ids: list[str], timeout: float = 900) -> list[float]:
    """Wait (one SQL query per poll, not an HTTP request per photo: the API shares the cores with
    the worker being measured) and return each photo's upload-to-READY latency in ms."""
    import psycopg

    url = database_url.replace("postgresql+psycopg", "postgresql")
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT status, error, extract(epoch FROM processed_at - created_at) * 1000 "
                "FROM photos WHERE id = ANY(%s::uuid[])",
                (ids,),
            ).fetchall()
            failed = [row for row in rows if row[0] == "FAILED"]
            if failed:
                raise SystemExit(f"{len(failed)} photos FAILED: {failed[0][1]}")
            if len(rows) == len(ids) and all(row[0] == "READY" for row in rows):
                return [float(row[2]) for row in rows]
            time.sleep(0.1)
    raise SystemExit(f"photos not READY after {timeout}s")


def worker_stage_seconds(metrics_port: int) -> dict[str, float]:
    """Where the worker's time went, from its own Prometheus metrics."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/", timeout=10).text

    def total(name: str) -> float:
        return sum(
            float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
        )

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
    """py-spy on the worker process during the backlog, summarised as the hottest frames."""

    def __init__(self, worker_pid: int, output: Path) -> None:
        children = psutil.Process(worker_pid).children(recursive=True)
        target = (
            max(children, key=lambda p: p.memory_info().rss)
            if children
            else psutil.Process(worker_pid)
        )
        self.output = output
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(target.pid), "--format", "raw", "--rate", "50",
             "--output", str(output), "--nonblocking", "--threads"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> list[tuple[str, float]]:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(60)
        inclusive: dict[str, int] = {}
        total = 0
        for line in self.output.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            frames = stack.split(";")
            if any("_serve" in f or "worker_thread" in f.lower() for f in frames) is False:
                pass
            total += int(count)
            for frame in set(frames):
                name = re.sub(r" \(.*?:\d+\)$", "", frame)
                inclusive[name] = inclusive.get(name, 0) + int(count)
        interesting = (
            "photoembed",
            "encode_image",
            "load_rgb",
            "quality",
            "preprocess",
            "resize",
            "decode",
            "embed",
            "claim",
            "store",
            "wait",
            "get",
        )
        top = [
            (f, n / max(1, total)) for f, n in inclusive.items() if any(k in f for k in interesting)
        ]
        return sorted(top, key=lambda item: -item[1])[:20]


def upload(client: httpx.Client, path: Path) -> str:
    response = client.post("/photos", files={"file": (path.name, path.read_bytes())})
    response.raise_for_status()
    photo_id: str = response.json()["id"]
    return photo_id


def measure_service(
    settings: Settings, photos: list[Path], workdir: Path, light: int, profile: Path | None
) -> dict[str, Any]:
    # One log per run: a reused file would already hold the previous run's startup line.
    name = settings.embed_runtime
    api = ServiceProcess(["api"], settings_env(settings), workdir / f"api-{name}.log").start()
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{settings.api_port}",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    )
    try:
        api.wait_for_log("Application startup complete", timeout=120)
        first = upload(client, photos[0])
    except BaseException:
        api.stop()  # the finally below does not cover this part yet
        raise
    boot_started = time.perf_counter()
    worker = ServiceProcess(
        ["worker"], settings_env(settings), workdir / f"worker-{name}.log"
    ).start()
    assert worker.process is not None
    rss = PeakRss(worker.process.pid)
    rss.start()
    try:
        wait_ready(settings.database_url, [first])
        boot_to_first_ready = time.perf_counter() - boot_started

        light_latencies = [
            wait_ready(settings.database_url, [upload(client, p)])[0] for p in photos[1 : 1 + light]
        ]

        profiler = Profiler(worker.process.pid, profile) if profile else None
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda p: upload(client, p), photos))
        backlog_latencies = wait_ready(settings.database_url, ids)
        elapsed = time.perf_counter() - started
        hottest = profiler.stop() if profiler else []
        embedded = worker.log.count('"event": "photo.embedded"')
        stages = worker_stage_seconds(settings.metrics_port)
    finally:
        rss.done.set()
        worker.stop()
        api.stop()
    return {
        "service_photos_per_s": len(photos) / elapsed,
        "latency_p50_ms": percentile(light_latencies, 50),
        "latency_p95_ms": percentile(light_latencies, 95),
        "backlog_latency_p50_ms": percentile(backlog_latencies, 50),
        "backlog_latency_p95_ms": percentile(backlog_latencies, 95),
        "worker_peak_rss_mb": rss.peak / 2**20,
        "worker_rss_after_run_mb": rss.current / 2**20,
        "boot_to_first_ready_s": boot_to_first_ready,
        "photos_embedded": embedded,
        "worker_stages": stages,
        "profile_hottest_frames": [{"frame": f, "share": round(s, 3)} for f, s in hottest],
    }


def hottest_frames(service: dict[str, Any]) -> list[tuple[str, float]]:
    return [(f["frame"], f["share"]) for f in service["profile_hottest_frames"]]


RUNTIMES = ("torch", "onnx")


def service_rows(runtime: str, service: dict[str, Any]) -> list[tuple[str, str]]:
    stages = service["worker_stages"]
    return [
        (f"[{runtime}] service end to end (photos/s)", f"{service['service_photos_per_s']:.2f}"),
        (
            f"[{runtime}] service / own ceiling (goal >= 0.8)",
            f"{service['service_vs_ceiling']:.2f}",
        ),
        (f"[{runtime}] service / naive (goal >= 3)", f"{service['service_vs_naive']:.2f}"),
        (
            f"[{runtime}] latency p50 / p95, light load (ms)",
            f"{service['latency_p50_ms']:.0f} / {service['latency_p95_ms']:.0f}",
        ),
        (
            f"[{runtime}] latency p50 / p95, backlog (ms)",
            f"{service['backlog_latency_p50_ms']:.0f} / {service['backlog_latency_p95_ms']:.0f}",
        ),
        (
            f"[{runtime}] worker RSS peak / after (MB, goal < 1536)",
            f"{service['worker_peak_rss_mb']:.0f} / {service['worker_rss_after_run_mb']:.0f}",
        ),
        (f"[{runtime}] boot to first READY (s)", f"{service['boot_to_first_ready_s']:.1f}"),
        (
            f"[{runtime}] worker: decode+score / inference (s)",
            f"{stages['decode_and_score_s']:.1f} / {stages['inference_s']:.1f}",
        ),
        (f"[{runtime}] worker: mean batch size", f"{stages['mean_batch_size']:.1f}"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--light", type=int, default=8, help="photos sent one at a time")
    parser.add_argument("--worker-threads", type=int, default=4)
    parser.add_argument("--torch-threads", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results.json")
    parser.add_argument(
        "--profile", type=Path, help="py-spy the worker during the backlog (raw stacks)"
    )
    args = parser.parse_args()
    runtimes = [r for r in args.runtimes.split(",") if r]
    # The top-level keys describe the production CPU worker (compose runs EMBED_RUNTIME=onnx).
    primary = "onnx" if "onnx" in runtimes else runtimes[0]

    cache_root = REPO / ".cache"
    photos = photo_set(cache_root / "bench-photos", args.photos)
    with tempfile.TemporaryDirectory(prefix="photoembed-bench-") as tmp:
        workdir = Path(tmp)
        model_cache = workdir / "models"
        weights = cache_root / "test-weights" / "vit-b-32-random.bin"
        random_weights(weights)
        seed_hf_cache(model_cache, weights)
        postgres, redis_server = LocalPostgres(workdir / "pg"), LocalRedis(workdir / "redis")
        try:
            settings = Settings(
                env="production",
                database_url=postgres.start(),
                redis_url=redis_server.start(),
                storage_dir=workdir / "photos",
                api_keys=[API_KEY],
                api_port=free_port(),
                clip_cache_dir=model_cache,
                clip_device="cpu",
                worker_threads=args.worker_threads,
                torch_threads=args.torch_threads,
                embed_batch_size=args.batch_size,
                log_format="json",
                metrics_port=free_port(),
            )
            migrate(settings.database_url)

            torch_embedder = ClipEmbedder(settings)
            torch_embedder.load()
            ceilings = {"torch": measure_ceiling(torch_embedder, [1, 8, 16, 32])}
            naive = measure_naive(torch_embedder, photos[:12])
            jpegs = [p for p in photos[:12] if p.suffix == ".jpeg"]
            parity = preprocessing_parity(torch_embedder, jpegs)
            onnx_export_s = None
            if "onnx" in runtimes:
                started = time.perf_counter()
                onnx_embedder = OnnxEmbedder(settings)
                onnx_embedder.load()  # exports once; the worker then finds it in the cache
                onnx_export_s = time.perf_counter() - started
                ceilings["onnx"] = measure_ceiling(onnx_embedder, [1, 8, 16, 32])
                loaded = [Image.open(p).convert("RGB") for p in photos[:4]]
                onnx_vs_torch = float(
                    np.abs(
                        onnx_embedder.embed_images(loaded) - torch_embedder.embed_images(loaded)
                    ).max()
                )
                del onnx_embedder
            del torch_embedder

            services: dict[str, dict[str, Any]] = {}
            for runtime in runtimes:
                run_settings = settings.model_copy(
                    update={"embed_runtime": runtime, "storage_dir": workdir / f"photos-{runtime}"}
                )
                profile = args.profile.with_suffix(f".{runtime}.txt") if args.profile else None
                service = measure_service(run_settings, photos, workdir, args.light, profile)
                ceiling = ceilings[runtime][0]
                service["ceiling_images_per_s"] = ceiling
                service["service_vs_ceiling"] = service["service_photos_per_s"] / ceiling
                service["service_vs_torch_ceiling"] = (
                    service["service_photos_per_s"] / ceilings["torch"][0]
                )
                service["service_vs_naive"] = service["service_photos_per_s"] / naive
                services[runtime] = service
        finally:
            redis_server.stop()
            postgres.stop()

    results: dict[str, Any] = {
        "runtime": primary,
        **services[primary],
        "naive_photos_per_s": naive,
        "ceilings": {
            runtime: {"best_images_per_s": best, "by_batch_size": by_batch}
            for runtime, (best, by_batch) in ceilings.items()
        },
        "runtimes": services,
        "draft_decode_parity": parity,
        "onnx_export_and_load_s": onnx_export_s,
        "onnx_vs_torch_max_abs": onnx_vs_torch if "onnx" in runtimes else None,
        "config": {
            "photos": len(photos),
            "mix": [f"{w}x{h} {f}" for w, h, f, _ in MIX],
            "worker_threads": args.worker_threads,
            "torch_threads": args.torch_threads or os.cpu_count(),
            "batch_size": args.batch_size,
            "cores": os.cpu_count(),
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    rows = [
        (
            f"model ceiling {runtime} (images/s, best batch)",
            f"{best:.2f}  by batch " + ", ".join(f"{b}: {r:.1f}" for b, r in by_batch.items()),
        )
        for runtime, (best, by_batch) in ceilings.items()
    ]
    rows.append(("naive worker (photos/s)", f"{naive:.2f}"))
    for runtime, service in services.items():
        rows.extend(service_rows(runtime, service))
    rows.append(
        (
            "draft vs full decode: max abs / min cos",
            f"{parity['max_abs_diff']:.2e} / {parity['min_cosine']:.6f}",
        )
    )
    if "onnx" in runtimes:
        rows.append(("onnx vs torch embeddings: max abs", f"{onnx_vs_torch:.2e}"))
    width = max(len(name) for name, _ in rows)
    print(json.dumps(results, indent=2))
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for runtime, service in services.items():
        for frame, share in hottest_frames(service):
            print(f"  [{runtime}] profile {share:6.1%}  {frame}")
    print(f"\nwritten to {args.output} (top-level keys: the {primary} runtime)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
