"""`make run` (`photoembed dev`), the README's first command: the whole product on one machine,
with its own embedded Postgres and Redis, from an empty home folder to a READY photo."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from photoembed.devstack import ServiceProcess, free_port
from tests.helpers import encode, make_photo, wait_for_status, wait_until

pytestmark = pytest.mark.slow


def test_photoembed_dev_takes_a_photo_to_ready_and_stops_cleanly(tmp_path: Path, model_cache: Path):
    # given an empty home folder and nothing configured but the model cache and two free ports
    home = tmp_path / "home"
    port = free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CLIP_", "API_", "WORKER_", "DATABASE_", "REDIS_", "STORAGE_"))
    }
    env.update(
        CLIP_CACHE_DIR=str(model_cache),
        API_PORT=str(port),
        DEV_REDIS_PORT=str(free_port()),
        METRICS_PORT=str(free_port()),
        LOG_FORMAT="json",
    )

    # when `photoembed dev` starts
    dev = ServiceProcess(["dev", "--home", str(home)], env, tmp_path / "dev.log").start()
    try:
        dev.wait_for_log('"event": "dev.running"', timeout=300)
        # it says so once the worker has its model (exported to ONNX on this first start) and
        # passed its self-check: a photo uploaded now does not wait for either
        said = dev.log
        passed, running = said.find('"selfcheck.passed"'), said.find('"event": "dev.running"')
        assert 0 <= passed < running, "dev.running came before the worker's self-check"
        key = (home / "api-key").read_text().strip()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ) as client:
            wait_until(lambda: _ready(client), timeout=120)

            # then an uploaded photo ends READY through its own worker, within the 10 s the
            # README promises a newcomer (3.7 s measured on a fresh home here)
            response = client.post("/photos", files={"file": ("a.jpg", encode(make_photo(901)))})
            assert response.status_code == 202, response.text
            photo = wait_for_status(client, response.json()["id"], {"READY", "FAILED"}, 10)
            assert photo["status"] == "READY", photo
    finally:
        # and Ctrl-C stops the API, the worker, Redis and Postgres
        dev.stop(signal.SIGINT, timeout=90, group=False)
    assert dev.process is not None and dev.process.returncode == 0, dev.log[-3000:]
    assert '"event": "dev.stopped"' in dev.log


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False
