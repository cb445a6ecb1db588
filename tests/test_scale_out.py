"""Growing past one machine and a bad day, on real processes: storage every worker can reach (a
folder, or S3 served by a real S3-compatible server), a worker that cannot see a photo's bytes,
uploads too large for the limit read as 413 by ordinary clients, retries that end, failures that
can be undone, and a backlog that shows in the metrics."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import requests

from photoembed.config import Settings
from photoembed.devstack import free_port
from photoembed.storage import LocalStorage
from tests.conftest import BUCKET, TEST_API_KEY, s3_client
from tests.helpers import encode, make_person_photo, make_photo, wait_for_status

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}


def _quick_retries(settings: Settings, **more: object) -> Settings:
    return settings.model_copy(
        update={"retry_min_backoff_ms": 200, "retry_max_backoff_ms": 600, **more}
    )


def _upload(api: httpx.Client, seed: int) -> str:
    response = api.post("/photos", files={"file": (f"{seed}.jpg", encode(make_photo(seed)))})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _storage_key(settings: Settings, photo_id: str) -> str:
    with psycopg.connect(settings.database_url.replace("postgresql+psycopg", "postgresql")) as c:
        row = c.execute("SELECT storage_key FROM photos WHERE id = %s", (photo_id,)).fetchone()
    assert row is not None
    return str(row[0])


# --- storage across machines -------------------------------------------------------------------


def test_a_worker_without_the_bytes_retries_and_the_photo_ends_ready_through_one_that_has_them(
    settings, api, start_service, tmp_path
):
    # given the API writing to folder A, and a first worker that sees only folder B; attempts
    # spread over half a minute
    settings = settings.model_copy(
        update={"max_attempts": 10, "retry_min_backoff_ms": 2000, "retry_max_backoff_ms": 4000}
    )
    blind = start_service("worker", settings, STORAGE_DIR=str(tmp_path / "elsewhere"))
    blind.wait_for_log("selfcheck.passed")
    photo_id = _upload(api, 901)
    # when that worker tries it, it is handed back as a transient fault, not failed
    blind.wait_for_log("photo.retrying", timeout=60)
    assert api.get(f"/photos/{photo_id}").json()["status"] in ("PENDING", "PROCESSING")
    # then, once it is replaced by a worker with the shared storage, that one finishes it. (With
    # both running, the blind one re-enqueues each retry and usually fetches it again itself: a
    # run here saw it spend all 10 attempts while the other idled, and the photo end FAILED
    # naming STORAGE_URL, which is the other test's case.)
    blind.stop(group=False)
    sighted = start_service("worker", settings)
    photo = wait_for_status(api, photo_id, {"READY", "FAILED"}, timeout=240)
    assert photo["status"] == "READY", photo
    assert photo["error"] is None
    assert "photo.embedded" in sighted.log


def test_when_no_worker_has_the_bytes_the_photo_fails_naming_the_storage_then_retry_fixes_it(
    settings, api, start_service, tmp_path
):
    # given a worker that sees another folder than the API writes to
    settings = _quick_retries(settings, max_attempts=3)
    elsewhere = tmp_path / "elsewhere"
    worker = start_service("worker", settings, STORAGE_DIR=str(elsewhere))
    worker.wait_for_log("selfcheck.passed")
    photo_id = _upload(api, 902)
    # then after its attempts it is FAILED, and the error says which setting to check
    photo = wait_for_status(api, photo_id, {"READY", "FAILED"}, timeout=120)
    assert photo["status"] == "FAILED" and photo["attempts"] == 3
    assert f"STORAGE_URL={elsewhere.resolve().as_uri()}" in photo["error"]

    # when the cause is fixed (the bytes reach that storage) and the photo is retried
    key = _storage_key(settings, photo_id)
    target = LocalStorage(elsewhere).path_for(key)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(LocalStorage(settings.storage_dir).path_for(key), target)
    response = api.post(f"/photos/{photo_id}/retry")
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/photos/{photo_id}"
    assert response.json()["status"] == "PENDING" and response.json()["attempts"] == 0

    # then it ends READY, and retrying a photo that is not FAILED is a conflict
    assert wait_for_status(api, photo_id, {"READY", "FAILED"})["status"] == "READY"
    conflict = api.post(f"/photos/{photo_id}/retry")
    assert conflict.status_code == 409 and "only FAILED" in conflict.json()["detail"]
    assert api.post(f"/photos/{'0' * 8}-0000-0000-0000-{'0' * 12}/retry").status_code == 404


def test_retry_from_the_command_line_counts_filters_and_sends(
    settings, api, start_service, tmp_path
):
    # given two photos FAILED because their worker looked in the wrong folder
    settings = _quick_retries(settings, max_attempts=1)
    wrong = tmp_path / f"wrong-{settings.queue_name}"
    worker = start_service("worker", settings, STORAGE_DIR=str(wrong))
    worker.wait_for_log("selfcheck.passed")
    ids = [_upload(api, seed) for seed in (903, 904)]
    for photo_id in ids:
        assert wait_for_status(api, photo_id, {"READY", "FAILED"})["status"] == "FAILED"
    worker.stop()

    # when the command line counts them (by a word of their error; none since a later time)
    dry = start_service("retry", settings, "--failed", "--error-contains", wrong.name, "--dry-run")
    assert dry.wait(60) == 0 and "2 FAILED photo(s) would be retried" in dry.log, dry.log
    later = "2999-01-01T00:00:00+00:00"
    none = start_service("retry", settings, "--failed", "--since", later, "--dry-run")
    assert none.wait(60) == 0 and "0 FAILED photo(s) would be retried" in none.log

    # and sends them again once a worker can read them
    sent = start_service("retry", settings, "--failed", "--error-contains", wrong.name)
    assert sent.wait(60) == 0 and "2 FAILED photo(s) sent again" in sent.log
    fixed = start_service("worker", settings)
    fixed.wait_for_log("selfcheck.passed")
    for photo_id in ids:
        assert wait_for_status(api, photo_id, {"READY", "FAILED"})["status"] == "READY"


def test_s3_storage_end_to_end_upload_ready_search_thumbnail_delete(
    settings, start_service, s3_server
):
    # given the API and a worker on S3 storage (no shared folder at all)
    prefix = f"run-{settings.queue_name}"
    settings = settings.model_copy(
        update={
            "storage_url": f"s3://{BUCKET}/{prefix}",
            "storage_dir": Path("/nonexistent"),
            "s3_endpoint_url": s3_server,
            "s3_region": "us-east-1",
            "s3_access_key_id": "test-key",
            "s3_secret_access_key": "test-secret",
        }
    )
    service = start_service("api", settings)
    service.wait_for_log("Uvicorn running on", timeout=60)
    api = httpx.Client(base_url=f"http://127.0.0.1:{settings.api_port}", headers=AUTH, timeout=60)
    assert api.get("/readyz").json()["storage"] == "ok"
    worker = start_service("worker", settings)
    worker.wait_for_log("selfcheck.passed")

    # when photos are uploaded
    data = encode(make_person_photo(7, 1))
    photo_id = api.post("/photos", files={"file": ("a.jpg", data)}).json()["id"]
    other = api.post("/photos", files={"file": ("b.jpg", encode(make_person_photo(8, 1)))})
    # then the bytes are an object under the content address, and the photos end READY
    key = _storage_key(settings, photo_id)
    s3 = s3_client(s3_server)

    def names() -> set[str]:
        listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return {item["Key"] for item in listing.get("Contents", [])}

    assert f"{prefix}/{key[:2]}/{key[2:4]}/{key}" in names()
    for pid in (photo_id, other.json()["id"]):
        assert wait_for_status(api, pid, {"READY", "FAILED"})["status"] == "READY"
    # and search and thumbnails work from there
    results = api.post("/search", json={"photo_id": photo_id, "limit": 5}).json()["results"]
    assert results[0]["photo_id"] == photo_id
    thumbnail = api.get(f"/photos/{photo_id}/thumbnail")
    assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"
    assert f"{prefix}/.thumbnails/{key[:2]}/{key}.jpg" in names()
    # and deleting the photo removes its object and thumbnail
    assert api.delete(f"/photos/{photo_id}").status_code == 204
    assert not any(key in name for name in names())


# --- oversized uploads ---------------------------------------------------------------------------


class _Body:
    """A 64 MB body that is generated as it is sent: nothing this large is held by the client."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __iter__(self) -> Iterator[bytes]:
        chunk = b"\xff" * (1 << 20)
        for _ in range(self.size // len(chunk)):
            yield chunk


def test_a_64_mb_upload_is_read_as_413_with_its_reason_by_ordinary_clients(settings, start_service):
    service = start_service("api", settings)
    service.wait_for_log("Uvicorn running on", timeout=60)
    url = f"http://127.0.0.1:{settings.api_port}/photos"
    size = 64 << 20
    boundary = "photoembed-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    length = len(head) + size + len(tail)

    def body() -> Iterator[bytes]:
        yield head
        yield from _Body(size)
        yield tail

    # the whole request body as a file: clients stream it from disk with its length
    body_file = Path(settings.storage_dir).parent / "body.bin"
    with body_file.open("wb") as out:
        for chunk in body():
            out.write(chunk)
    headers = {**AUTH, "Content-Type": content_type, "Content-Length": str(length)}

    # Python requests
    with body_file.open("rb") as data:
        answer = requests.post(url, data=data, headers=headers, timeout=120)
    assert answer.status_code == 413 and "limit" in answer.json()["detail"]

    # urllib
    with body_file.open("rb") as data:
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=120)  # noqa: S310
    assert refused.value.code == 413 and "limit" in json.loads(refused.value.read())["detail"]

    # http.client, chunked (no length declared: the limit is found while reading)
    connection = http.client.HTTPConnection("127.0.0.1", settings.api_port, timeout=120)
    connection.request(
        "POST",
        "/photos",
        body=body(),
        headers={**AUTH, "Content-Type": content_type},
        encode_chunked=True,
    )
    response = connection.getresponse()
    assert response.status == 413 and "limit" in json.loads(response.read())["detail"]

    # curl, which asks "Expect: 100-continue" and so sends nothing once it is refused
    if shutil.which("curl"):
        big = Path(settings.storage_dir).parent / "big.jpg"
        with big.open("wb") as out:
            for chunk in _Body(size):
                out.write(chunk)
        done = subprocess.run(
            ["curl", "-s", "-o", "-", "-w", "%{http_code}", "-H",
             f"Authorization: Bearer {TEST_API_KEY}", "-F", f"file=@{big}", url],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.stdout.endswith("413") and "limit" in done.stdout, done.stdout[-300:]


# --- retries that end, backlog you can see -------------------------------------------------------


def test_a_photo_that_always_meets_a_transient_error_ends_failed_within_the_time_bound(
    settings, api, start_service
):
    # given a worker whose storage never answers (a transient error every time), attempts that
    # would last long, and a short time bound
    settings = _quick_retries(
        settings,
        max_attempts=1000,
        give_up_after_seconds=6,
        sweep_interval_seconds=2,
        sweep_pending_grace_seconds=1,
    )
    closed = f"http://127.0.0.1:{free_port()}"
    worker = start_service(
        "worker",
        settings,
        STORAGE_URL=f"s3://{BUCKET}/nowhere",
        S3_ENDPOINT_URL=closed,
        S3_ACCESS_KEY_ID="k",
        S3_SECRET_ACCESS_KEY="s",
        S3_REGION="us-east-1",
    )
    worker.wait_for_log("selfcheck.passed")
    started = time.monotonic()
    photo_id = _upload(api, 905)
    # then it ends FAILED, within the bound, with the bound and the last error named
    photo = wait_for_status(api, photo_id, {"READY", "FAILED"}, timeout=90)
    assert photo["status"] == "FAILED"
    assert "GIVE_UP_AFTER_SECONDS" in photo["error"] and "last error" in photo["error"]
    assert time.monotonic() - started < 60
    assert "sweeper.gave_up" in worker.log and '"give_up_after_seconds": 6' in worker.log


def _gauge(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} ([0-9.e+-]+)$", text, re.M)
    assert match is not None, name + labels
    return float(match.group(1))


def test_backlog_gauges_move_and_readyz_names_what_is_down(
    settings, api, start_service, redis_server
):
    pending = 'photoembed_photos{status="PENDING"}'
    before = _gauge(api.get("/metrics").text, pending)
    ids = [_upload(api, seed) for seed in (906, 907, 908)]
    time.sleep(5.1)  # the gauges are read at most every 5 s
    backlog = api.get("/metrics").text
    assert _gauge(backlog, pending) >= before + 3
    queue = f'{{queue="{settings.queue_name}"}}'
    assert _gauge(backlog, "photoembed_oldest_pending_age_seconds", queue) > 0

    worker = start_service("worker", settings)
    worker.wait_for_log("selfcheck.passed")
    for photo_id in ids:
        assert wait_for_status(api, photo_id, {"READY", "FAILED"})["status"] == "READY"
    time.sleep(5.1)
    assert _gauge(api.get("/metrics").text, pending) <= before

    redis_server.stop()
    try:
        ready = httpx.get(f"{api.base_url}/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["down"] == ["broker"] and ready.json()["database"] == "ok"
        # and the same verdict reaches the metrics an alert reads
        time.sleep(5.1)
        down = api.get("/metrics").text
        assert _gauge(down, "photoembed_dependency_up", '{dependency="broker"}') == 0
        assert _gauge(down, "photoembed_dependency_up", '{dependency="database"}') == 1
    finally:
        redis_server.start()
