"""`docker compose up`, run as a user would, driven through the published port only.

`make compose-up-test` prepares the engine (podman with its Docker API socket), the stand-in base
images and the project's images, then runs this module (`pytest -m compose`); `make test` leaves it
out. The stack is docker-compose.yml as shipped, with tests/compose/compose.test.yml on top for
what only a test needs: its API key, and the model files the images would have baked in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import encode, make_photo, wait_for_faces, wait_until

pytestmark = pytest.mark.compose

REPO = Path(__file__).resolve().parents[1]
PROJECT = "photoembed-compose-test"
SOCKET = "unix:///run/podman/podman.sock"
ARTIFACTS = REPO / "test-artifacts"
# a hub request would show one of these in a log
HUB_TRACES = ("huggingface.co", "Failed to download", "model_unavailable")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ComposeStack:
    def __init__(self, api_models: Path, worker_models: Path, port: int) -> None:
        self.worker_models = worker_models
        self.port = port
        self.prometheus_port = _free_port()
        self.alertmanager_port = _free_port()
        self.api_key = f"compose-{uuid.uuid4().hex}"
        self.env = {
            **os.environ,
            "DOCKER_HOST": os.environ.get("DOCKER_HOST", SOCKET),
            "API_PUBLISHED_PORT": str(port),
            "PROMETHEUS_PUBLISHED_PORT": str(self.prometheus_port),
            "ALERTMANAGER_PUBLISHED_PORT": str(self.alertmanager_port),
            "COMPOSE_TEST_API_KEY": self.api_key,
            "COMPOSE_TEST_API_MODELS": str(api_models),
            "COMPOSE_TEST_WORKER_MODELS": str(worker_models),
        }
        self.earlier_logs = ""  # what containers said before a `down` removed them
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=60,
        )

    def run(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """`docker-compose <args>` on this stack, whatever its exit status."""
        command = [
            "docker-compose",
            "-p",
            PROJECT,
            "-f",
            "docker-compose.yml",
            "-f",
            "tests/compose/compose.test.yml",
            *args,
        ]
        return subprocess.run(
            command, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def compose(self, *args: str, timeout: float = 900) -> str:
        done = self.run(*args, timeout=timeout)
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def up(self) -> None:
        self.compose("up", "-d", "--no-build")

    def down(self, *args: str) -> None:
        self.earlier_logs += self.compose("logs", "--no-color", timeout=120)
        self.compose("down", *args)

    def health(self) -> dict[str, str]:
        """Each running service's state as compose reports it, e.g. `Up (healthy)`."""
        states = {}
        for line in self.compose("ps").splitlines():
            for service in ("postgres", "redis", "api", "worker"):
                if line.startswith(f"{PROJECT}_{service}_"):
                    states[service] = line
        return states

    def wait_ready(self, timeout: float = 600) -> None:
        def ready() -> bool:
            try:
                return self.client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout=timeout, interval=1)

    def upload(self, seed: int) -> str:
        data = encode(make_photo(seed, (800, 600)))
        response = self.client.post("/photos", files={"file": (f"p{seed}.jpg", data)})
        assert response.status_code == 202, response.text
        photo_id: str = response.json()["id"]
        return photo_id

    def statuses(self, ids: list[str]) -> dict[str, str]:
        return {i: self.client.get(f"/photos/{i}").json()["status"] for i in ids}

    def wait_all_ready(self, ids: list[str], timeout: float = 600) -> None:
        def all_ready() -> bool:
            current = self.statuses(ids)
            assert "FAILED" not in current.values(), current
            return set(current.values()) == {"READY"}

        wait_until(all_ready, timeout=timeout, interval=1)

    def vector(self, photo_id: str) -> list[float]:
        response = self.client.get(f"/photos/{photo_id}/embedding")
        assert response.status_code == 200, response.text
        vector: list[float] = response.json()["vector"]
        return vector

    def installed(self, service: str, *modules: str) -> list[str]:
        """Which of `modules` the running `service`'s container has installed."""
        found = self.compose(
            "exec", "-T", service, "python", "-c",
            "import importlib.util as u, json, sys; "
            "print(json.dumps([m for m in sys.argv[1:] if u.find_spec(m)]))", *modules,
        )  # fmt: skip
        listed: list[str] = json.loads(found)
        return listed

    def logs(self) -> str:
        return self.earlier_logs + self.compose("logs", "--no-color", timeout=120)


def baked_models(folder: Path, model_cache: Path) -> tuple[Path, Path]:
    """What the model stage of Dockerfile.worker bakes into the API's and the worker's /models with
    DOWNLOAD_MODEL=1, made by its commands from the test's weights (the images here are built
    without them): the ONNX towers with their manifest for the API; the image tower, manifest and
    the torch model's self-check reference for the worker. Not the weights."""
    weights = folder / "weights"
    shutil.copytree(model_cache, weights, symlinks=True)
    env = {
        **os.environ,
        "CLIP_CACHE_DIR": str(weights),
        "CLIP_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
    }
    for runtime, command in (("onnx", ["model", "onnx"]), ("torch", ["selfcheck", "--record"])):
        done = subprocess.run(
            [sys.executable, "-m", "photoembed.cli", *command],
            env={**env, "EMBED_RUNTIME": runtime},
            cwd=folder,  # no .env of the repository's
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    api, worker = folder / "api", folder / "worker"
    shutil.copytree(weights / "onnx", api / "onnx")
    # the model stage's /models/image-onnx: no text tower, no tokenizer
    not_the_workers = shutil.ignore_patterns("*-text.onnx*", "*.txt.gz")
    shutil.copytree(weights / "onnx", worker / "onnx", ignore=not_the_workers)
    shutil.copytree(weights / "references", worker / "references")
    # the containers run as uid 10001
    for path in [folder, *api.rglob("*"), *worker.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    return api, worker


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[ComposeStack]:
    if shutil.which("docker-compose") is None or not Path("/run/podman/podman.sock").exists():
        pytest.fail("run `make compose-up-test`: it prepares the engine and builds the images")
    api_models, worker_models = baked_models(tmp_path_factory.mktemp("compose-models"), model_cache)
    env_file = REPO / ".env"
    made_env_file = not env_file.exists()
    if made_env_file:  # what a newcomer does: copy the example unchanged
        shutil.copy(REPO / ".env.example", env_file)
    running = ComposeStack(api_models, worker_models, _free_port())
    running.compose("down", "-v", "--remove-orphans")
    try:
        yield running
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "compose-logs.txt").write_text(running.logs())
        running.compose("down", "-v", "--remove-orphans")
        if made_env_file:
            env_file.unlink()


@pytest.fixture(scope="module")
def timings() -> Iterator[dict[str, Any]]:
    measured: dict[str, Any] = {}
    yield measured
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "compose-timings.json").write_text(json.dumps(measured, indent=2) + "\n")


def test_up_serves_uploads_to_ready(stack: ComposeStack, timings: dict[str, Any]) -> None:
    # given the stack started from nothing
    started = time.perf_counter()
    stack.up()
    stack.wait_ready()
    timings["up_to_readyz_s"] = round(time.perf_counter() - started, 1)
    # when a photo is uploaded through the published port
    photo_id = stack.upload(1)
    stack.wait_all_ready([photo_id])
    timings["up_to_first_ready_s"] = round(time.perf_counter() - started, 1)
    # then it has a 512-d unit vector and a quality score
    vector = stack.vector(photo_id)
    assert len(vector) == 512
    assert abs(sum(x * x for x in vector) - 1) < 1e-4
    assert stack.client.get(f"/photos/{photo_id}").json()["quality_score"] is not None
    # and compose sees every service healthy by its own health checks
    wait_until(
        lambda: all("(healthy)" in state for state in stack.health().values()),
        timeout=180,
        interval=2,
    )
    assert set(stack.health()) == {"postgres", "redis", "api", "worker"}


def test_search_by_text_and_by_photo(stack: ComposeStack) -> None:
    # given a few READY photos
    ids = [stack.upload(seed) for seed in (2, 3, 4)]
    stack.wait_all_ready(ids)
    # when searching by text (the API's own text tower, from the mounted cache, no hub)
    by_text = stack.client.post("/search", json={"text": "a person in a red coat", "limit": 10})
    # and by an uploaded image and by a stored photo
    image = encode(make_photo(3, (800, 600)))
    by_image = stack.client.post("/search", files={"file": ("q.jpg", image)})
    by_photo = stack.client.post("/search", json={"photo_id": ids[0]})
    # then each answers with ranked photos; a stored photo finds itself first
    assert by_text.status_code == 200, by_text.text
    assert {hit["photo_id"] for hit in by_text.json()["results"]} >= set(ids)
    assert by_image.status_code == 200, by_image.text
    assert by_image.json()["results"][0]["photo_id"] == ids[1]
    assert by_photo.json()["results"][0]["photo_id"] == ids[0]
    assert by_photo.json()["results"][0]["similarity"] > 0.999
    # and the API that answered has no torch, OpenCLIP or face model installed at all
    assert (
        stack.installed(
            "api", "torch", "open_clip", "transformers", "dlib", "ai_edge_litert", "onnx"
        )
        == []
    )


def test_the_cpu_worker_image_has_no_torch_and_refuses_a_model_it_was_not_built_for(
    stack: ComposeStack, timings: dict[str, Any]
) -> None:
    # given the running worker (it embedded the photos above, and finds faces below)
    # then its image has no torch, torchvision, OpenCLIP or transformers installed
    assert stack.installed("worker", "torch", "torchvision", "open_clip", "transformers") == []
    # and the image with what its model stage bakes in (mounted here) is at most 1.5 GB
    inspected = subprocess.run(
        ["podman", "image", "inspect", "photoembed-worker", "--format", "{{.Size}}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    baked = sum(p.stat().st_size for p in stack.worker_models.rglob("*") if p.is_file())
    timings["worker_image_mb"] = round(int(inspected.stdout) / 1e6)
    timings["worker_image_with_models_mb"] = round((int(inspected.stdout) + baked) / 1e6)
    assert int(inspected.stdout) + baked <= 1.5e9, timings
    # and its self-check refuses GELU for these QuickGELU weights, naming the fix
    refused = stack.run(
        "exec", "-T", "-e", "CLIP_QUICK_GELU=false", "worker", "photoembed", "selfcheck"
    )
    assert refused.returncode == 1
    assert "no ONNX export of ViT-B-32 (openai, CLIP_QUICK_GELU=false)" in refused.stderr
    assert "CLIP_QUICK_GELU (auto: the weights' own activation)" in refused.stderr


def test_the_face_stage_runs_in_the_stack(stack: ComposeStack) -> None:
    # given a photo of two people, uploaded for nobody
    from photoembed.faces import samples

    group = samples.group_photo(["astronaut", "hopper"], samples.real_faces())
    response = stack.client.post("/photos", files={"file": ("two.jpg", encode(group))})
    photo_id = response.json()["id"]

    # then the worker's face stage finds both faces, in the photo's pixels
    photo = wait_for_faces(stack.client, photo_id, timeout=300)
    assert (photo["status"], photo["faces_status"], photo["face_count"]) == ("READY", "DONE", 2)
    faces = stack.client.get(f"/photos/{photo_id}/faces").json()["items"]
    assert all(face["model"].startswith("dlib:") and face["box"][2] > 100 for face in faces)


def test_worker_restart_mid_backlog_loses_nothing(stack: ComposeStack) -> None:
    # given a backlog of 96 photos waiting (uploaded while the worker was stopped: a worker
    # running during the uploads kept up with them, and a stop then came after the work), and
    # the worker started on it
    stack.compose("stop", "worker")
    try:
        ids = [stack.upload(100 + seed) for seed in range(96)]
    finally:
        stack.compose("start", "worker")
    wait_until(lambda: "READY" in stack.statuses(ids).values(), timeout=300, interval=0.5)
    # when the worker container is stopped before it has finished, and started again
    stack.compose("stop", "worker")
    at_stop = list(stack.statuses(ids).values())
    stack.compose("start", "worker")
    assert at_stop.count("READY") < len(ids), "the backlog was done before the stop"
    # then every photo still ends READY, with one vector each
    stack.wait_all_ready(ids)
    assert all(len(stack.vector(photo_id)) == 512 for photo_id in ids)


def _alerts(url: str, path: str) -> list[dict[str, Any]]:
    try:
        body = httpx.get(url + path, timeout=10).json()
    except (httpx.TransportError, ValueError):
        return []
    alerts: list[dict[str, Any]] = body["data"]["alerts"] if "data" in body else body
    return alerts


def _firing(alerts: list[dict[str, Any]], name: str) -> bool:
    return any(
        alert["labels"]["alertname"] == name
        and alert.get("state", alert.get("status", {}).get("state")) in ("firing", "active")
        for alert in alerts
    )


def test_monitoring_pages_when_no_worker_is_ready_and_resolves(
    stack: ComposeStack, timings: dict[str, Any]
) -> None:
    prometheus = f"http://127.0.0.1:{stack.prometheus_port}"
    alertmanager = f"http://127.0.0.1:{stack.alertmanager_port}"
    # given the monitoring profile beside the running stack, scraping the API and the worker
    stack.compose("--profile", "monitoring", "up", "-d", "--no-build", "prometheus")

    def targets_up() -> bool:
        try:
            active = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]
        except (httpx.TransportError, ValueError):
            return False
        health = {t["labels"]["job"]: t["health"] for t in active["activeTargets"]}
        return health == {"photoembed-api": "up", "photoembed-worker": "up"}

    wait_until(targets_up, timeout=300, interval=2)
    assert not _firing(_alerts(prometheus, "/api/v1/alerts"), "PhotoembedNoReadyWorker")
    # when the worker stops while a photo waits
    stack.compose("stop", "worker")
    photo_id = stack.upload(700)
    stopped = time.perf_counter()
    # then the alert fires in Prometheus and reaches Alertmanager
    wait_until(
        lambda: _firing(_alerts(prometheus, "/api/v1/alerts"), "PhotoembedNoReadyWorker"),
        timeout=300,
        interval=2,
    )
    timings["worker_stopped_to_alert_firing_s"] = round(time.perf_counter() - stopped, 1)
    wait_until(
        lambda: _firing(_alerts(alertmanager, "/api/v2/alerts"), "PhotoembedNoReadyWorker"),
        timeout=120,
        interval=2,
    )
    # when the worker starts again, the photo is embedded and the alert resolves
    stack.compose("start", "worker")
    started = time.perf_counter()
    stack.wait_all_ready([photo_id])
    wait_until(
        lambda: not _firing(_alerts(prometheus, "/api/v1/alerts"), "PhotoembedNoReadyWorker"),
        timeout=300,
        interval=2,
    )
    timings["worker_started_to_alert_resolved_s"] = round(time.perf_counter() - started, 1)
    stack.compose("--profile", "monitoring", "rm", "-s", "-f", "prometheus", "alertmanager")


def test_down_and_up_keep_photos_and_vectors(stack: ComposeStack) -> None:
    # given READY photos and their vectors
    listed = stack.client.get("/photos", params={"limit": 200}).json()["items"]
    before = {item["id"]: stack.vector(item["id"]) for item in listed}
    assert len(before) >= 28
    # when the stack goes down (volumes kept) and up again
    stack.down()
    stack.up()
    stack.wait_ready()
    # then every photo is still READY with the same vector, and its file still serves
    after = {photo_id: stack.vector(photo_id) for photo_id in before}
    assert after == before
    some = next(iter(before))
    thumbnail = stack.client.get(f"/photos/{some}/thumbnail")
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    # and the restarted worker still embeds
    fresh = stack.upload(999)
    stack.wait_all_ready([fresh])


def test_no_container_reached_the_hub(stack: ComposeStack) -> None:
    # given everything above ran (text search loaded the text tower in the API)
    # then neither model-loading service could have tried: offline whatever .env says
    for service in ("api", "worker"):
        assert stack.compose("exec", "-T", service, "printenv", "HF_HUB_OFFLINE").strip() == "1"
    # and no log shows a hub request or a missing model, and the workers passed their self-check
    logs = stack.logs()
    for trace in HUB_TRACES:
        assert trace not in logs, trace
    assert '"event": "selfcheck.passed"' in logs


# The product's own Redis client, as every API and worker process builds it, run in the API's
# container with REDIS_SENTINELS set: it writes a key and says which master took it.
_SENTINEL_PROBE = (
    "from photoembed.config import Settings\n"
    "from photoembed.queue import redis_client\n"
    "client = redis_client(Settings())\n"
    "client.set('photoembed:ha-probe', 'written')\n"
    "print(client.connection_pool.get_master_address()[0])\n"
)
SENTINELS = "sentinel-1:26379,sentinel-2:26379,sentinel-3:26379"


def test_the_ha_profile_promotes_the_replica_and_the_service_follows_it(
    stack: ComposeStack, timings: dict[str, Any]
) -> None:
    # (last: it leaves Redis's master on the replica, and puts the first Redis back at the end)
    # given the `ha` profile beside the running stack: a replica and three sentinels
    stack.compose(
        "--profile", "ha", "up", "-d", "--no-build",
        "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3",
    )  # fmt: skip

    def probe() -> str | None:
        try:
            out = stack.compose(
                "exec", "-T", "-e", f"REDIS_SENTINELS={SENTINELS}", "api", "python", "-c",
                _SENTINEL_PROBE, timeout=60,
            )  # fmt: skip
        except AssertionError:
            return None
        return out.strip().splitlines()[-1]

    def sentinels_see_the_replica() -> bool:
        out = stack.compose(
            "exec", "-T", "sentinel-1", "redis-cli", "-p", "26379", "sentinel", "replicas",
            "photoembed",
        )  # fmt: skip
        return "s_down" not in out and "slave" in out

    first_master = wait_until(probe, timeout=120, interval=2)
    wait_until(sentinels_see_the_replica, timeout=120, interval=2)
    # when the master is killed
    stack.compose("kill", "redis")
    killed = time.perf_counter()
    # then the sentinels promote the replica and the product's client writes to it
    new_master = wait_until(lambda: (m := probe()) and m != first_master and m, timeout=120)
    timings["ha_redis_killed_to_writes_on_new_master_s"] = round(time.perf_counter() - killed, 1)
    assert new_master != first_master
    # and the stack is put back as the other tests found it
    stack.compose("--profile", "ha", "rm", "-s", "-f", "sentinel-1", "sentinel-2", "sentinel-3",
                  "redis-replica")  # fmt: skip
    stack.compose("start", "redis")
    stack.wait_ready()
