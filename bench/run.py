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
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

# before anything below imports huggingface_hub, which reads it once
os.environ["HF_HUB_OFFLINE"] = "1"

import events_cost
from events_cost import webhook_cost
from faces import print_faces, run_faces
from gpu import print_gpu, run_gpu
from harness import REPO, Stack
from importing import print_import, run_import_bench
from pipeline import print_pipeline, run_cpu

from photoembed.cli.serve import api_processes
from photoembed.config import Settings


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
            burst = results["burst"]
            cost["burst_faces_on_vs_pipeline_limit"] = cost["faces_on"]["burst_photos_per_s"] / (
                burst["photos_per_s"] / burst["vs_pipeline_limit"]
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
        print_pipeline(results)
    elif gpu:
        print_gpu(results)
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
