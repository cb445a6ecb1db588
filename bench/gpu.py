"""The same on a CUDA machine (`make bench-gpu`): the image tower's precisions and batches, the
decode ceilings (Pillow, nvJPEG), the naive loop, ingest and the drain for processes x threads."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from decoding import decode_parity, measure_cpu_decode
from harness import GPU_MIX, REPO, Stack, photo_set
from PIL import Image
from pipeline import (
    measure_ceiling,
    measure_drain,
    measure_ingest,
    measure_naive,
)

from photoembed.clip.runtimes.torch_runtime import ClipEmbedder
from photoembed.images import read_jpeg_header
from photoembed.sizing import plan_sizing, resolve


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


def print_gpu(results: dict[str, Any]) -> None:
    print(
        f"\ndrain {results['drain_default_photos_per_s']:.0f} photos/s with defaults "
        f"({results['default_vs_best']:.2f}x the best), ingest "
        f"{results['api_ingest_16_clients_photos_per_s']:.0f} photos/s"
    )
