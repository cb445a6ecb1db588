"""The photo pipeline's sizing and its safety nets: defaults sized to the machine, connection pools
sized from threads and checked against the server, a batch that runs out of device memory split
until every photo is READY, one model per process, and a precision that cannot hide GELU."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import structlog
import torch

from photoembed.cli.serve import check_connection_budget
from photoembed.clip.runtimes.torch_runtime import ClipEmbedder
from photoembed.clip.selfcheck import run_selfcheck
from photoembed.config import Settings
from photoembed.db import check_budget
from photoembed.models import DEFAULT_LIBRARY_ID
from photoembed.photos import accept_photo, storage_for
from photoembed.queue import build_broker
from photoembed.sizing import plan_sizing, resolve
from photoembed.worker.pipeline import process_photo
from tests.helpers import encode, make_photo, statuses


def test_cpu_defaults_run_onnx_with_enough_photos_in_flight_to_fill_a_batch():
    sizing = plan_sizing(Settings(clip_device="cpu"), cores=2)
    assert (sizing.runtime, sizing.precision, sizing.jpeg_decoder) == ("onnx", "fp32", "pillow")
    # one single-threaded forward pass per core, side by side
    assert (sizing.processes, sizing.inference_streams, sizing.inference_threads) == (1, 2, 1)
    # 16 photos in flight fill a batch of 16; a connection for each thread
    assert (sizing.threads, sizing.batch_size, sizing.pool_size) == (16, 16, 16)


def test_more_cores_run_more_streams_each_fed_with_photos_in_flight():
    sizing = plan_sizing(Settings(clip_device="cpu"), cores=16)
    assert (sizing.inference_streams, sizing.inference_threads) == (16, 1)
    assert sizing.threads == 16 * 8 and sizing.pool_size == 16


def test_streams_are_side_by_side_only_where_the_runtime_runs_passes_in_parallel():
    # torch sets its threads for the whole process: one pass over every core
    torch_cpu = plan_sizing(Settings(clip_device="cpu", embed_runtime="torch"), cores=4)
    assert (torch_cpu.inference_streams, torch_cpu.inference_threads) == (1, 4)
    # intra-op threads asked for: the cores left over make the streams
    asked = plan_sizing(Settings(clip_device="cpu", torch_threads=2, inference_streams=2), cores=4)
    assert (asked.inference_streams, asked.inference_threads) == (2, 2)
    assert plan_sizing(Settings(clip_device="cpu", torch_threads=4), cores=4).inference_streams == 1
    # one stream asked for: its pass gets every core (the README's latency-first setting)
    one_pass = plan_sizing(Settings(clip_device="cpu", inference_streams=1), cores=4)
    assert (one_pass.inference_streams, one_pass.inference_threads) == (1, 4)
    # and deciding twice decides the same
    resolved = resolve(Settings(clip_device="cpu"), cores=2)
    assert plan_sizing(resolved, cores=2) == plan_sizing(Settings(clip_device="cpu"), cores=2)


def test_gpu_defaults_decode_on_the_gpu_in_fp16_with_hundreds_of_photos_in_flight():
    sizing = plan_sizing(Settings(clip_device="cuda"), cores=16)
    assert (sizing.runtime, sizing.precision, sizing.jpeg_decoder) == (
        "torch",
        "fp16",
        "torchvision",
    )
    assert (sizing.processes, sizing.threads, sizing.batch_size) == (4, 128, 256)
    # 4 processes x (16 + the sweeper's and the health check's 2) stays under Postgres' 100
    assert sizing.pool_size == 16 and 4 * (16 + 2) < 100


def test_explicit_settings_win_and_the_pool_follows_the_threads():
    sizing = plan_sizing(
        Settings(clip_device="cpu", embed_runtime="torch", worker_threads=3, embed_batch_size=7),
        cores=8,
    )
    assert (sizing.runtime, sizing.threads, sizing.batch_size, sizing.pool_size) == (
        "torch",
        3,
        7,
        3,
    )


def test_torch_embedders_size_their_threads_for_torch_where_workers_run_onnx():
    # given a CPU machine, where a worker's auto sizing is single-threaded ONNX streams
    cores = os.cpu_count() or 1
    worker = resolve(Settings(clip_device="cpu"))
    assert worker.embed_runtime == "onnx" and plan_sizing(worker).inference_threads == 1
    # then a torch embedder given the worker's settings (the ONNX export) and any other torch
    # embedder use every core in one pass
    assert ClipEmbedder(worker)._inference_threads == cores
    assert ClipEmbedder(Settings(clip_device="cpu"))._inference_threads == cores


@pytest.mark.slow
def test_a_worker_budget_over_max_connections_is_reported_at_start(settings):
    # given the server's real limit
    fits = check_budget(settings.database_url, processes=1, pool_size=4)
    assert fits.max_connections > 0 and not fits.exceeded
    too_many = settings.model_copy(
        update={"worker_processes": fits.max_connections, "db_pool_size": 4}
    )
    # when a worker would open more than that, it says so with the numbers
    assert check_budget(settings.database_url, too_many.worker_processes, 4).exceeded
    with structlog.testing.capture_logs() as logged:
        check_connection_budget(too_many)
    (event,) = [e for e in logged if e["event"] == "db.connection_budget_exceeded"]
    assert event["wanted"] > event["max_connections"] and "max_connections" in event["fix"]


@pytest.mark.slow
def test_a_batch_out_of_device_memory_is_split_and_every_photo_ends_ready(
    settings, model_cache, monkeypatch
):
    # given a device that fails any batch of more than 2 images with an out-of-memory error
    settings = settings.model_copy(
        update={
            "clip_device": "cpu",
            "embed_runtime": "torch",
            "embed_batch_size": 8,
            "embed_batch_wait_ms": 200,
        }
    )
    embedder = ClipEmbedder(settings, image_only=True)
    real_forward = embedder._forward
    batch_sizes: list[int] = []

    def small_device(pixels: torch.Tensor, exact: bool) -> torch.Tensor:
        batch_sizes.append(len(pixels))
        if len(pixels) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(pixels, exact)

    monkeypatch.setattr(embedder, "_forward", small_device)
    storage = storage_for(settings)
    broker = build_broker(settings)
    ids = []
    for seed in range(8):
        writer = storage.staging(settings.max_upload_bytes)
        writer.write(encode(make_photo(600 + seed, (400, 300))))
        staged = writer.finish()
        ids.append(accept_photo(settings, storage, broker, staged, DEFAULT_LIBRARY_ID, None).id)

    # when eight worker threads process them at once
    def process(photo_id: uuid.UUID) -> str:
        return process_photo(photo_id, f"message-{photo_id}", settings, embedder, storage)

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(process, ids))

    # then every photo is READY: batches of more than 2 were tried and refused, and the 8 photos
    # passed the device in batches of at most 2
    assert outcomes == ["READY"] * 8
    assert set(statuses(settings.database_url, [str(i) for i in ids]).values()) == {"READY"}
    assert max(batch_sizes) > 2
    passed = [size for size in batch_sizes if size <= 2]
    assert sum(passed) == 8, batch_sizes


@pytest.mark.slow
def test_a_precision_that_cannot_tell_gelu_from_quick_gelu_fails_the_self_check(model_settings):
    # bf16 moves the probe ~2e-3, more than the GELU/QuickGELU difference it must expose
    refused = run_selfcheck(
        model_settings,
        ClipEmbedder(model_settings.model_copy(update={"clip_precision": "bf16"})),
    )
    assert [f.code for f in refused.findings] == ["precision"]
    assert "CLIP_PRECISION=bf16" in refused.findings[0].message
    # full precision passes on the same weights
    assert run_selfcheck(model_settings, ClipEmbedder(model_settings)).ok


@pytest.mark.slow
def test_a_worker_process_holds_one_model_and_its_health_check_loads_none(
    settings, api, start_service
):
    from photoembed.devstack import free_port
    from tests.helpers import wait_for_status

    settings = settings.model_copy(
        update={"embed_runtime": "torch", "metrics_port": free_port(), "worker_processes": 1}
    )
    worker = start_service("worker", settings)
    worker.wait_for_log("selfcheck.passed")
    ids = [
        api.post("/photos", files={"file": (f"{s}.jpg", encode(make_photo(s)))}).json()["id"]
        for s in (700, 701, 702)
    ]
    for photo_id in ids:
        assert wait_for_status(api, photo_id, {"READY", "FAILED"})["status"] == "READY"

    health = start_service("health", settings)
    assert health.wait(60) == 0, health.log
    assert "worker ready" in health.log and "model.load" not in health.log
    api_health = start_service("health", settings, "api")
    assert api_health.wait(60) == 0, api_health.log
    assert '"ready":true' in api_health.log
    # the self-check, the photos and the health check all used the one model loaded at boot
    assert worker.log.count('"event": "model.loaded"') == 1
