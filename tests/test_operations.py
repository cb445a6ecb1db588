"""Operations: metrics that move, a log check that catches ML warnings, a SIGTERM that loses
nothing, and a compose file that runs the same commands and settings as the native path."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from photoembed.cli import build_parser
from photoembed.config import Settings
from photoembed.devstack import free_port
from photoembed.logcheck import find_problems
from tests.helpers import (
    embeddings_per_photo,
    encode,
    make_photo,
    statuses,
    wait_for_status,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = (
        rf"^{re.escape(name)}{re.escape(labels)}\s+([0-9.e+-]+)$"
        if labels
        else rf"^{re.escape(name)}(?:\{{[^}}]*\}})?\s+([0-9.e+-]+)$"
    )
    values = [float(v) for v in re.findall(pattern, text, re.MULTILINE)]
    return sum(values)


@pytest.mark.slow
def test_metrics_move_after_a_processed_photo(settings, api, start_service):
    settings = settings.model_copy(update={"metrics_port": free_port()})
    worker = start_service("worker", settings)
    worker.wait_for_log("selfcheck.passed")
    before = api.get("/metrics").text
    assert httpx.get(f"{api.base_url}/metrics").status_code == 401

    photo_id = api.post("/photos", files={"file": ("m.jpg", encode(make_photo(31)))}).json()["id"]
    assert wait_for_status(api, photo_id, {"READY", "FAILED"})["status"] == "READY"

    after = api.get("/metrics").text
    accepted = 'photoembed_uploads_total{outcome="accepted"}'
    assert _metric(after, accepted) == _metric(before, accepted) + 1
    latency = "photoembed_http_request_duration_seconds_count"
    upload_latency = '{method="POST",route="/photos",status="202"}'
    refused_scrape = '{method="GET",route="/metrics",status="401"}'
    assert _metric(after, latency, upload_latency) == _metric(before, latency, upload_latency) + 1
    assert _metric(after, latency, refused_scrape) >= 1

    scrape = lambda: httpx.get(f"http://127.0.0.1:{settings.metrics_port}/").text  # noqa: E731
    worker_metrics = wait_until(
        lambda: "photoembed_photos_embedded_total 1.0" in (t := scrape()) and t, timeout=30
    )
    # the self-check's two decode probes went through the same path at boot
    assert _metric(worker_metrics, "photoembed_decode_seconds_count") == 1 + 2
    assert _metric(worker_metrics, "photoembed_inference_batch_size_count") >= 1
    # and the worker said how it sized itself: the streams its embedder planned for this machine
    policy = next(json.loads(line) for line in worker.log.splitlines() if '"worker.policy"' in line)
    cores = os.cpu_count()
    assert (policy["runtime"], policy["inference_streams"], policy["inference_threads"]) == (
        "onnx",  # on a CPU machine: one single-threaded ONNX stream per core
        cores,
        1,
    )
    assert _metric(worker_metrics, "photoembed_model_load_seconds") > 0
    assert _metric(worker_metrics, 'photoembed_photo_status_transitions_total{status="READY"}') == 1
    assert _metric(worker_metrics, "dramatiq_messages_total") >= 1


@pytest.mark.slow
def test_logcheck_fails_on_a_worker_log_with_the_quickgelu_warning_and_passes_a_clean_one(
    settings, start_service
):
    # each worker on a port of its own: the first one's metrics server may outlive it a moment
    wrong = start_service(
        "worker", settings, CLIP_QUICK_GELU="false", METRICS_PORT=str(free_port())
    )
    assert wrong.wait(timeout=180) != 0
    clean = start_service("worker", settings.model_copy(update={"metrics_port": free_port()}))
    clean.wait_for_log("selfcheck.passed")
    clean.stop()

    flagged = start_service("logcheck", settings, str(wrong.log_path))
    assert flagged.wait() == 1
    assert "QuickGELU mismatch" in flagged.log
    passed = start_service("logcheck", settings, str(clean.log_path))
    assert passed.wait() == 0, passed.log


def test_logcheck_reads_raw_warnings_and_ignores_unrelated_records():
    lines = [
        '{"event": "photo.embedded", "level": "info", "logger": "photoembed.worker.pipeline"}',
        '{"event": "photo.failed", "level": "warning", "logger": "photoembed.worker.pipeline"}',
        "/usr/lib/python3/site-packages/open_clip/factory.py:450: UserWarning: QuickGELU mismatch",
        '{"event": "No pretrained weights loaded", "level": "warning", "logger": "root"}',
    ]
    assert [p.line_number for p in find_problems(lines)] == [3, 4]


def test_logcheck_follow_prints_each_offending_record_as_it_arrives():
    # given `docker compose logs -f worker | photoembed logcheck --follow`
    follow = subprocess.Popen(
        [sys.executable, "-m", "photoembed.cli", "logcheck", "--follow"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert follow.stdin is not None and follow.stdout is not None
    try:
        # when a clean record and then a library warning arrive, with compose's prefix
        follow.stdin.write('worker-1  | {"event": "photo.embedded", "level": "info"}\n')
        warning = '{"event": "Truncated File Read", "level": "warning", "logger": "py.warnings"}'
        follow.stdin.write(f"worker-1  | {warning}\n")
        follow.stdin.flush()
        # then the warning is printed while the stream is still open
        printed = follow.stdout.readline()
        assert "standard input:2:" in printed and "Truncated File Read" in printed
        assert follow.poll() is None
    finally:
        follow.stdin.close()
    # and the end of the stream ends it with exit 1
    assert follow.wait(timeout=30) == 1
    assert "1 model-loading warning(s)" in follow.stdout.read()
    clean = subprocess.run(
        [sys.executable, "-m", "photoembed.cli", "logcheck", "--follow"],
        input='{"event": "photo.embedded", "level": "info"}\n',
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert clean.returncode == 0, clean.stdout


@pytest.mark.slow
def test_sigterm_during_a_run_loses_nothing(settings, api, start_service):
    # given a backlog of 48 photos, more than the worker holds at once, and a worker on it
    ids = [
        api.post("/photos", files={"file": (f"{s}.jpg", encode(make_photo(s, (900, 700))))}).json()[
            "id"
        ]
        for s in range(500, 548)
    ]
    worker = start_service("worker", settings)
    worker.wait_for_log("selfcheck.passed")
    wait_until(
        lambda: list(statuses(settings.database_url, ids).values()).count("READY") >= 3, timeout=120
    )
    # when it is stopped with SIGTERM (a deploy, a scale-down)
    worker.stop(signal.SIGTERM, timeout=120, group=False)
    assert worker.process is not None and worker.process.returncode == 0
    assert "Worker has been shut down" in worker.log
    # then it finished or handed back what it held, and the rest of the backlog still waits
    at_stop = list(statuses(settings.database_url, ids).values())
    assert "PROCESSING" not in at_stop, at_stop
    assert at_stop.count("PENDING") > 0, "the backlog was done before the stop: it proved nothing"

    successor = start_service("worker", settings)
    successor.wait_for_log("selfcheck.passed")
    wait_until(lambda: set(statuses(settings.database_url, ids).values()) == {"READY"}, timeout=180)
    assert set(embeddings_per_photo(settings.database_url, ids).values()) == {1}


def test_compose_runs_the_native_commands_with_known_settings():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "api", "worker"} <= set(services)
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    settings_names = {name.upper() for name in Settings.model_fields} | {"HF_HUB_OFFLINE"}
    for name in ("migrate", "api", "worker"):
        service = services[name]
        assert service["command"][0] == "photoembed" and service["command"][1] in commands
        assert service["command"][1] == name
        assert set(service["environment"]) <= settings_names, name
        assert service["env_file"] == ".env"
    assert services["worker"]["build"]["dockerfile"] == "Dockerfile.worker"
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "photoembed", "health"]
    assert services["api"]["healthcheck"]["test"] == ["CMD", "photoembed", "health", "api"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert (
            services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        )
    assert {"pgdata", "photos"} <= set(compose["volumes"])
    for name in ("api", "worker"):
        # the weights are baked in: a volume at the cache would hide a newer image's weights
        assert not any(":/models" in volume for volume in services[name].get("volumes", []))
        assert services[name]["environment"]["HF_HUB_OFFLINE"] == "1", name
    dockerfile = (REPO / "Dockerfile.worker").read_text()
    assert "USER 10001" in dockerfile and "photoembed model download" in dockerfile


def test_compose_file_validates_with_docker_compose():
    import os
    import shutil
    import subprocess

    if shutil.which("docker-compose") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's docker-compose (.ci/run does)")
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    result = subprocess.run(
        ["make", "-s", "compose-check"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "docker-compose.yml is valid" in result.stdout
