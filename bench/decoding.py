"""What a photo costs before the model: the decoders' ceilings, the default decode's parity with a
full one, and the embedder's CPU per photo by stage."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np
from PIL import Image

from photoembed.clip.runtimes.onnx_runtime import OnnxEmbedder
from photoembed.clip.runtimes.torch_runtime import ClipEmbedder
from photoembed.images import DecodeLimits, load_rgb
from photoembed.quality import quality_score


def stage_cpu_ms(embedder: OnnxEmbedder, photos: list[Path], draft_side: int) -> dict[str, float]:
    """Where a photo's CPU goes in the worker's embedder, stage by stage, mean over the photo mix:
    reading the bytes, the decode (`load_rgb`: the JPEG's DCT scale, EXIF rotation, RGB), the
    quality score and the preprocessing (resize, crop, normalise) on this thread, and the model at
    batch 16 (its threads counted over the process). The database's part is the service's
    `cpu_ms_per_photo["database"]`."""
    limits = DecodeLimits(10**9, 1, draft_side)
    spent = dict.fromkeys(("read", "decode", "quality", "preprocess", "model"), 0.0)
    pixels = []
    for path in photos:
        clock = time.thread_time()
        data = path.read_bytes()
        spent["read"] += time.thread_time() - clock
        clock = time.thread_time()
        image, info = load_rgb(data, limits)
        spent["decode"] += time.thread_time() - clock
        clock = time.thread_time()
        quality_score(image, (info.width, info.height))
        spent["quality"] += time.thread_time() - clock
        clock = time.thread_time()
        pixels.append(embedder.preprocess(image))
        spent["preprocess"] += time.thread_time() - clock
    batches = [np.stack(pixels[i : i + 16]) for i in range(0, len(pixels), 16)]
    embedder.embed_pixels(batches[0])  # warm-up
    clock = time.process_time()
    for batch in batches:
        embedder.embed_pixels(batch)
    spent["model"] = time.process_time() - clock
    return {stage: round(1000 * seconds / len(photos), 2) for stage, seconds in spent.items()}


def _pillow_decode(args: tuple[str, int]) -> float:
    path, draft = args
    image, info = load_rgb(Path(path).read_bytes(), DecodeLimits(10**9, 1, draft))
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
