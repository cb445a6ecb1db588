"""Monitoring that pages someone: the alert rules pass promtool's checks and unit tests, each alert
has its severity, its words and its runbook section, every metric the rules read is one the
product exports (read from a real scrape of a running API and worker), and a warning raised inside
a running worker moves the log-events metric."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image

from photoembed.devstack import free_port
from tests.conftest import running_stack, stack_settings
from tests.helpers import encode, make_photo, wait_for_status, wait_until

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "monitoring"
RULES = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"][0]["rules"]
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)$", re.MULTILINE)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is needed: Debian's prometheus package (.ci/run installs it)")
    return subprocess.run(
        [promtool, *args], cwd=MONITORING, capture_output=True, text=True, timeout=120
    )


def test_the_alert_rules_are_valid_and_pass_their_unit_tests():
    checked = _promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_says_how_bad_what_and_where_to_look_and_is_tested_both_ways():
    runbook = (REPO / "docs" / "runbook.md").read_text()
    unit_tests = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())["tests"]
    checks = [check for test in unit_tests for check in test["alert_rule_test"]]
    for rule in RULES:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        assert rule["annotations"]["runbook_url"] == f"docs/runbook.md#{name.lower()}"
        assert f"\n### {name}\n" in runbook, f"docs/runbook.md has no section for {name}"
        mine = [check for check in checks if check["alertname"] == name]
        assert any(check["exp_alerts"] for check in mine), f"{name} is never tested firing"
        assert any(not check["exp_alerts"] for check in mine), f"{name} is never tested quiet"


def _samples(text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            totals[match.group(1)] = totals.get(match.group(1), 0.0) + float(match.group(2))
    return totals


def _log_events(text: str, logger: str) -> float:
    pattern = rf'^photoembed_log_events_total\{{[^}}]*logger="{re.escape(logger)}"[^}}]*\}} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def _jpeg_with_damaged_exif() -> bytes:
    """A photo whose EXIF points past its end: Pillow decodes it and warns (a UserWarning)."""
    exif = Image.Exif()
    exif[0x010F] = "x" * 40  # Make, long enough to be stored by offset
    data = bytearray(encode(make_photo(41, (640, 480)), exif=exif))
    entry = data.find(b"\x01\x0f\x00\x02")  # the Make entry, big-endian as Pillow writes it
    data[entry + 8 : entry + 12] = b"\x00\x00\xff\xff"
    return bytes(data)


@pytest.fixture(scope="module")
def running(tmp_path_factory, postgres, redis_server, model_cache):
    folder = tmp_path_factory.mktemp("monitoring")
    settings = stack_settings(folder, postgres, redis_server, model_cache)
    settings = settings.model_copy(update={"metrics_port": free_port()})
    with running_stack(settings, folder) as api:
        yield settings, api


@pytest.mark.slow
def test_a_warning_raised_inside_the_running_worker_moves_the_log_events_metric(running):
    settings, api = running

    def scrape() -> str:
        return httpx.get(f"http://127.0.0.1:{settings.metrics_port}/").text

    before = _log_events(scrape(), "py.warnings")
    # when a photo makes Pillow warn while the worker decodes it
    response = api.post("/photos", files={"file": ("exif.jpg", _jpeg_with_damaged_exif())})
    assert wait_for_status(api, response.json()["id"], {"READY", "FAILED"})["status"] == "READY"
    # then the worker's metrics count it, by level and logger
    wait_until(lambda: _log_events(scrape(), "py.warnings") >= before + 1, timeout=30)
    assert 'level="warning",logger="py.warnings"' in scrape()


@pytest.mark.slow
def test_every_metric_the_rules_read_is_exported_by_the_running_api_and_worker(running):
    settings, api = running
    # given some traffic, so that counters and histograms have samples (a warning included)
    for name, data in (("m.jpg", encode(make_photo(42))), ("w.jpg", _jpeg_with_damaged_exif())):
        photo_id = api.post("/photos", files={"file": (name, data)}).json()["id"]
        assert wait_for_status(api, photo_id, {"READY", "FAILED"})["status"] == "READY"
    worker = httpx.get(f"http://127.0.0.1:{settings.metrics_port}/").text
    exported = set(_samples(api.get("/metrics").text)) | set(_samples(worker))
    # then every photoembed_* name in every rule is among them
    used = {name for rule in RULES for name in re.findall(r"\bphotoembed_\w+", rule["expr"])}
    assert used, "the rules read no product metric"
    # exported only where SEARCH_DATABASE_URL is set: tests/test_failover.py's replica test
    used -= {"photoembed_replica_lag_seconds"}
    assert used <= exported, f"the rules read metrics nobody exports: {sorted(used - exported)}"
    # and the API reports each dependency answering
    samples = _samples(api.get("/metrics").text)
    assert samples["photoembed_dependency_up"] == 3


def test_the_compose_prometheus_configuration_is_valid(tmp_path):
    # given the configuration as the monitoring image holds it, its paths pointed here
    (tmp_path / "api-key").write_text("a-key")
    config = (MONITORING / "prometheus.yml").read_text()
    config = config.replace("/etc/photoembed-monitoring/", f"{MONITORING}/")
    config = config.replace("/prometheus/api-key", str(tmp_path / "api-key"))
    (tmp_path / "prometheus.yml").write_text(config)
    # then promtool accepts it, rules included
    checked = _promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in checked.stdout
