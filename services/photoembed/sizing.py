"""Defaults sized to the machine a process finds: every `auto` (or 0) setting becomes a number.

On a CPU the image tower runs in ONNX Runtime, one worker process uses all the cores for inference
and keeps enough photos in flight (decoding in its threads while a batch runs) to fill batches of
the size the benchmark found best. Each core runs its own single-threaded forward pass (inference
streams) rather than one pass being spread over all of them: a pass then never waits at a barrier
for a thread that decoding took off its core. On a CUDA GPU the tower runs in torch at fp16, JPEGs
decode on the GPU, several processes share the GPU (each holds one model, about 1.4 GB) and each
keeps hundreds of photos in flight. Explicit settings always win.

Finding the device imports torch only where a GPU is present: a CPU machine decides without it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from photoembed.config import Settings

# Measured with `make bench` on 2 cores (docs/performance.md, "Throughput"): in-flight photos and batch size;
# more cores run more streams, each kept fed with photos.
CPU_THREADS = 16
CPU_THREADS_PER_STREAM = 8
CPU_BATCH = 16
# For one CUDA GPU: photos in flight per process, images per forward pass, processes per GPU.
GPU_THREADS = 128
GPU_BATCH = 256
GPU_MAX_PROCESSES = 4
# A process never needs more connections than threads that can hold one at a time; claims and
# stores are short, so a few serve a hundred threads.
MAX_POOL = 16


def nvidia_gpu_present() -> bool:
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/version").exists()


def detect_device(settings: Settings) -> str:
    """CLIP_DEVICE, with `auto` resolved: cuda where torch sees a GPU, mps on Apple silicon."""
    if settings.clip_device != "auto":
        return settings.clip_device
    if settings.embed_runtime == "onnx":
        return "cpu"
    if nvidia_gpu_present() and importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return "cuda"
    elif sys.platform == "darwin" and settings.embed_runtime == "torch":
        import torch

        if torch.backends.mps.is_available():
            return "mps"
    return "cpu"


@dataclass(frozen=True)
class Sizing:
    device: str
    runtime: str
    precision: str
    processes: int
    threads: int
    batch_size: int
    inference_threads: int
    inference_streams: int
    pool_size: int
    jpeg_decoder: str


def plan_sizing(settings: Settings, cores: int | None = None) -> Sizing:
    cores = cores or os.cpu_count() or 1
    device = detect_device(settings)
    gpu = device == "cuda"
    runtime = settings.embed_runtime
    if runtime == "auto":
        runtime = "onnx" if device == "cpu" and settings.embed_backend == "open_clip" else "torch"
    precision = settings.clip_precision
    if precision == "auto":
        precision = "fp16" if gpu else "fp32"
    processes = settings.worker_processes or (
        max(1, min(GPU_MAX_PROCESSES, cores // 4)) if gpu else 1
    )
    per_process = max(1, cores // processes)
    # Side by side where the runtime runs passes in parallel: ONNX Runtime sessions are safe to
    # share between threads, while torch sets its thread count for the whole process.
    side_by_side = runtime == "onnx" and not gpu and not settings.torch_threads
    streams = settings.inference_streams or (per_process if side_by_side else 1)
    threads = settings.worker_threads or (
        GPU_THREADS if gpu else max(CPU_THREADS, CPU_THREADS_PER_STREAM * streams)
    )
    batch = settings.embed_batch_size or (GPU_BATCH if gpu else CPU_BATCH)
    inference = settings.torch_threads or (
        max(1, per_process // streams) if not gpu else max(1, min(4, per_process))
    )
    pool = settings.db_pool_size or min(threads, MAX_POOL)
    decoder = settings.jpeg_decoder
    if decoder == "auto":
        decoder = "torchvision" if gpu and runtime == "torch" else "pillow"
    return Sizing(
        device=device,
        runtime=runtime,
        precision=precision,
        processes=processes,
        threads=threads,
        batch_size=batch,
        inference_threads=inference,
        inference_streams=streams,
        pool_size=pool,
        jpeg_decoder=decoder,
    )


def decided_settings(settings: Settings, cores: int | None = None) -> dict[str, str | int]:
    """The automatic values decided for this machine, by setting name; all but the inference
    streams and their threads: those belong to each embedder's runtime (the API's torch query
    model, or the torch export of an ONNX worker's model, beside ONNX streams), and every
    embedder plans them for itself."""
    sizing = plan_sizing(settings, cores)
    return {
        "clip_device": sizing.device,
        "embed_runtime": sizing.runtime,
        "clip_precision": sizing.precision,
        "worker_processes": sizing.processes,
        "worker_threads": sizing.threads,
        "embed_batch_size": sizing.batch_size,
        "db_pool_size": sizing.pool_size,
        "jpeg_decoder": sizing.jpeg_decoder,
    }


def resolve(settings: Settings, cores: int | None = None) -> Settings:
    """The same settings with the values decided for this machine (`decided_settings`)."""
    return settings.model_copy(update=decided_settings(settings, cores))
