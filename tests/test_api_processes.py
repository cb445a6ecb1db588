"""The API's shape for throughput: torch stays out of it (text and image searches run in ONNX
Runtime), several processes serve one port, and their metrics add up."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import psutil
import pytest
from fastapi.testclient import TestClient
from prometheus_client.mmap_dict import MmapedDict
from starlette.middleware.base import BaseHTTPMiddleware

from photoembed.api.app import create_app
from tests.conftest import TEST_API_KEY
from tests.helpers import encode, make_photo, wait_until

pytestmark = pytest.mark.slow


def _torch_loaded(pid: int) -> bool:
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return any(
        "libtorch" in mapping.path for process in processes for mapping in process.memory_maps()
    )


def test_the_api_never_holds_torch_not_even_for_text_and_image_searches(
    settings, start_service, http_client
):
    service = start_service("api", settings)
    service.wait_for_log("Uvicorn running on", timeout=60)
    assert service.process is not None
    client = http_client(settings.api_port, timeout=300)
    # uploads, reads, lists and health never need the model in the API process
    photo = client.post("/photos", files={"file": ("a.jpg", encode(make_photo(801)))}).json()
    assert client.get(f"/photos/{photo['id']}").status_code == 200
    service.wait_for_log('"event": "api.active_model"', timeout=30)  # the bench waits for it
    assert client.get("/readyz").status_code == 200
    assert not _torch_loaded(service.process.pid)
    # and text and image searches run in ONNX Runtime (the towers exported by a child process
    # with torch when the cache has none yet, which then exits)
    assert client.post("/search", json={"text": "a person"}).status_code == 200
    image_search = client.post("/search", files={"file": ("q.jpg", encode(make_photo(803)))})
    assert image_search.status_code == 200, image_search.text
    assert not _torch_loaded(service.process.pid)


def test_an_upload_leaves_the_event_loop_once_and_no_middleware_wraps_its_body(
    settings, monkeypatch
):
    # given the real app on the real Postgres and Redis, counting what it hands to worker threads
    app = create_app(settings)
    handed: list[str] = []
    hand_to_thread = anyio.to_thread.run_sync

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        handed.append(getattr(func, "func", func).__name__)
        return await hand_to_thread(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    client = TestClient(app, headers={"Authorization": f"Bearer {TEST_API_KEY}"})
    # when a photo is uploaded
    response = client.post("/photos", files={"file": ("a.jpg", encode(make_photo(802)))})
    # then it was accepted with one hop, for the database and the queue: the dependencies that
    # only read the app's state run on the event loop, and no BaseHTTPMiddleware (a task group
    # per body chunk) sits in front of the route
    assert response.status_code == 202, response.text
    assert handed == ["accept_photo"]
    assert not any(m.cls is BaseHTTPMiddleware for m in app.user_middleware)


def test_several_api_processes_serve_one_port_and_their_metrics_add_up(
    settings, start_service, http_client
):
    service = start_service("api", settings, API_WORKERS="2")
    # "Uvicorn running" comes from the supervisor; the workers say "startup complete" once bound
    service.wait_for_log("Application startup complete", timeout=120)
    client = http_client(settings.api_port)
    assert service.process is not None
    wait_until(lambda: len(psutil.Process(service.process.pid).children()) >= 2, timeout=60)

    # when uploads come, a new connection each, until both processes have taken some
    metrics_dir = settings.worker_metrics_dir.with_name(
        f"photoembed-api-metrics-{settings.api_port}"
    )
    sent = 0
    while sent < 12 or len(_accepted_by_process(metrics_dir)) < 2:
        assert sent < 200, f"one process took every upload: {_accepted_by_process(metrics_dir)}"
        response = httpx.post(
            f"{client.base_url}/photos",
            files={"file": (f"{sent}.jpg", encode(make_photo(sent)))},
            headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        )
        assert response.status_code == 202, response.text
        sent += 1

    # then both served uploads, and /metrics (answered by either) adds up what both counted
    served = _accepted_by_process(metrics_dir)
    assert len(served) == 2 and min(served.values()) >= 1 and sum(served.values()) == sent
    metrics = client.get("/metrics").text
    accepted = re.search(
        r'^photoembed_uploads_total\{outcome="accepted"\} ([0-9.]+)$', metrics, re.M
    )
    assert accepted is not None and float(accepted.group(1)) == sent


def _accepted_by_process(metrics_dir: Path) -> dict[str, float]:
    """Accepted uploads counted by each API process (its pid), from the files they share."""
    counted = {}
    for path in metrics_dir.glob("counter_*.db"):
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _, name, labels, _ = json.loads(key)  # metric, sample name, labels, help
            if name == "photoembed_uploads_total" and labels.get("outcome") == "accepted":
                counted[path.stem.removeprefix("counter_")] = value
    return {pid: value for pid, value in counted.items() if value > 0}
