"""`photoembed import` against the real stack (API, worker, Postgres, Redis): a generated library
of 2,000+ files with duplicates, corrupt files, clutter and a file over the limit; a re-run that
sends nothing; a run killed part-way and restarted; an S3 prefix with people by folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from photoembed.importer.client import ApiClient, Refused, Retry
from photoembed.importer.sources import SourceFile
from photoembed.samples import Library, library_tree
from tests.conftest import (
    BUCKET,
    S3_CREDENTIALS,
    TEST_API_KEY,
    new_database,
    running_stack,
    s3_client,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

MAX_UPLOAD_BYTES = 1_000_000


def _libpq(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg", "postgresql")


def _photos(database_url: str) -> tuple[int, int, dict[str, int]]:
    """Rows, distinct contents, and rows by status."""
    with psycopg.connect(_libpq(database_url)) as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT content_hash) FROM photos"
        ).fetchone()
        by_status = dict(conn.execute("SELECT status, count(*) FROM photos GROUP BY status"))
    return rows, distinct, by_status


def _import(
    settings, key_file: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "photoembed.cli", "import", *args,
            "--api", f"http://127.0.0.1:{settings.api_port}", "--key-file", str(key_file),
        ],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C must reach it as at a terminal: a test run started in the background of a
        # script inherits SIGINT ignored, and Python then never installs its handler
        preexec_fn=_default_sigint,
    )  # fmt: skip


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _finished(process: subprocess.Popen[str], timeout: float = 900) -> tuple[int, dict, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    summary = json.loads(stdout) if stdout.strip() else {}
    return process.returncode, summary, stderr


@pytest.fixture(scope="module")
def key_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("key") / "api-key"
    path.write_text(TEST_API_KEY + "\n")
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres, redis_server, model_cache):
    """An API and a worker on a database of their own, with a 1 MB upload limit."""
    from tests.conftest import stack_settings

    folder = tmp_path_factory.mktemp("import")
    settings = stack_settings(folder, postgres, redis_server, model_cache).model_copy(
        update={
            "database_url": new_database(postgres, "import"),
            "max_upload_bytes": MAX_UPLOAD_BYTES,
        }
    )
    with running_stack(settings, folder) as client:
        yield settings, client


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> tuple[Path, Library]:
    root = tmp_path_factory.mktemp("library")
    made = library_tree(
        root,
        1940,
        duplicates=40,
        corrupt=10,
        not_photos=15,
        too_large_bytes=MAX_UPLOAD_BYTES,
    )
    assert made.files >= 2000
    return root, made


def test_a_library_goes_in_once_and_a_second_run_sends_nothing(stack, library, key_file):
    settings, api = stack
    root, made = library
    # given a dry run first: it counts, uploads nothing and makes no person (what the API would
    # refuse, and copies far apart in the tree, it cannot tell without sending them)
    code, dry, _ = _finished(
        _import(settings, key_file, str(root), "--dry-run", "--person-from-folder", "--json")
    )
    assert code == 1 and dry["uploaded"] == 0, dry
    assert made.photos <= dry["would_upload"] <= made.photos + made.corrupt + made.duplicates
    assert _photos(settings.database_url)[0] == 0
    assert api.get("/persons").json()["items"] == []

    # when the library is imported, each photo attached to the person its folder names
    code, summary, stderr = _finished(
        _import(settings, key_file, str(root), "--person-from-folder", "--json")
    )

    # then every distinct photo went up once, copies and clutter were skipped without a request
    assert code == 1, stderr  # some files failed
    assert summary["uploaded"] == made.photos, json.dumps(summary)[:4000]
    assert summary["skipped_known"] + summary["skipped_duplicate"] == made.duplicates
    assert summary["skipped_not_photo"] == made.not_photos
    # and each bad file is reported with the API's reason (or the limit), never retried
    failures = {Path(f["file"]).name: f for f in summary["failures"]}
    assert len(failures) == made.corrupt + made.too_large, failures
    assert "over the service's limit" in failures["huge.png"]["reason"]
    broken = [f for name, f in failures.items() if name.startswith("broken_")]
    assert {f["status"] for f in broken} == {415}, broken
    assert all(f["reason"] for f in broken)
    # and every photo ends READY, none twice
    wait_until(
        lambda: _photos(settings.database_url)[2].get("READY") == made.photos,
        timeout=900,
        interval=2,
    )
    rows, distinct, by_status = _photos(settings.database_url)
    assert rows == distinct == made.photos and by_status == {"READY": made.photos}
    # and the folders' people hold their photos
    ada = api.get("/persons", params={"name": "Ada"}).json()["items"]
    assert len(ada) == 1
    photos = api.get(f"/persons/{ada[0]['id']}/photos", params={"limit": 100}).json()
    assert len(photos["items"]) == 100 and photos["next_cursor"]

    # when it runs again
    code, again, _ = _finished(_import(settings, key_file, str(root), "--json"))
    # then it uploads nothing: 0 bytes
    assert (code, again["uploaded"], again["uploaded_bytes"]) == (1, 0, 0), again
    assert again["skipped_known"] == made.photos + made.duplicates
    assert _photos(settings.database_url)[0] == made.photos


def test_a_run_killed_part_way_and_restarted_loses_and_doubles_nothing(
    settings, postgres, tmp_path, key_file, start_service
):
    from tests.conftest import start_api

    settings = settings.model_copy(
        update={"database_url": new_database(postgres, "importkill"), "max_upload_bytes": 10**6}
    )
    made = library_tree(tmp_path / "library", 600, seed=13)
    with start_api(settings, start_service):
        # given an import (no worker yet: the photos wait PENDING) killed after some uploads
        first = _import(settings, key_file, str(tmp_path / "library"), "--max-backlog", "0")
        wait_until(lambda: _photos(settings.database_url)[0] >= 150, timeout=300, interval=0.2)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        part = _photos(settings.database_url)[0]
        assert 150 <= part < made.photos
        # when it runs again to the end
        code, summary, stderr = _finished(
            _import(settings, key_file, str(tmp_path / "library"), "--max-backlog", "0", "--json")
        )
    # then what the first run sent is skipped, the rest goes up, nothing twice
    assert code == 0, stderr
    assert summary["skipped_known"] >= part - 16  # its uploads in flight may have landed too
    assert summary["uploaded"] + summary["skipped_known"] == made.photos
    rows, distinct, _ = _photos(settings.database_url)
    assert rows == distinct == made.photos


def test_an_s3_prefix_imports_with_people_from_its_folders(stack, key_file, s3_server):
    settings, api = stack
    # given photos under a prefix of a bucket, a folder per person, and clutter
    local = Path(settings.storage_dir).parent / "s3-library"
    made = library_tree(local, 30, people=("Farida", "Goran"), not_photos=2, seed=11)
    s3 = s3_client(s3_server)
    for path in local.rglob("*"):
        if path.is_file():
            s3.put_object(
                Bucket=BUCKET, Key=f"archive/{path.relative_to(local).as_posix()}",
                Body=path.read_bytes(),
            )  # fmt: skip
    # when the prefix is imported
    code, summary, _ = _finished(
        _import(
            settings, key_file, f"s3://{BUCKET}/archive", "--person-from-folder", "--json",
            "--s3-endpoint-url", s3_server, env=S3_CREDENTIALS,
        )
    )  # fmt: skip
    # then every photo is in, attached to its folder's person, the clutter skipped by name
    assert code == 0, json.dumps(summary.get("failures"))[:2000]
    assert summary["uploaded"] == made.photos, json.dumps(summary)[:3000]
    assert summary["skipped_not_photo"] == 2
    for name in ("Farida", "Goran"):
        person = api.get("/persons", params={"name": name}).json()["items"][0]
        photos = api.get(f"/persons/{person['id']}/photos", params={"limit": 100}).json()
        assert len(photos["items"]) == made.photos // 2


# The API client alone: a fake transport inside this unit's test (the tests above are the proof
# on the real stack).


class _Script:
    """Answers requests in order: each item an httpx.Response or an exception to raise."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _client(script: _Script) -> ApiClient:
    client = ApiClient("http://api.invalid", "key", Retry(attempts=4), sleep=lambda s: None)
    client.http = httpx.Client(base_url="http://api.invalid", transport=httpx.MockTransport(script))
    return client


def _file(tmp_path: Path) -> SourceFile:
    from photoembed.importer.sources import LocalOpener

    path = tmp_path / "a.jpg"
    path.write_bytes(b"photo bytes")
    return SourceFile(str(path), "a.jpg", "", path.stat().st_size, LocalOpener())


def test_transient_answers_are_retried_and_a_refusal_is_final(tmp_path):
    created = httpx.Response(202, json={"id": "0b3f6a52-4c1e-4d8e-9a51-2f6d1c7e9a10"})
    busy = _Script(
        httpx.Response(503, json={"detail": "storage down"}),
        httpx.Response(429, json={"detail": "slow down"}),
        created,
    )
    client = _client(busy)
    assert client.upload(_file(tmp_path), None, "0" * 64) == created.json()["id"]
    assert client.retries == 2 and len(busy.requests) == 3

    refused = _Script(httpx.Response(415, json={"detail": "not a recognised image"}))
    with pytest.raises(Refused) as error:
        _client(refused).upload(_file(tmp_path), None, "0" * 64)
    assert error.value.reason == "not a recognised image" and len(refused.requests) == 1


def test_after_a_dropped_connection_the_upload_is_checked_before_it_is_sent_again(tmp_path):
    photo_id = "0b3f6a52-4c1e-4d8e-9a51-2f6d1c7e9a10"
    digest = "a" * 64
    # the API stored the photo, then the connection broke before the answer came
    script = _Script(
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.Response(200, json={"known": {digest: photo_id}}),
    )
    assert _client(script).upload(_file(tmp_path), None, digest) == photo_id
    assert [r.url.path for r in script.requests] == ["/photos", "/photos/check"]


def test_watch_keeps_importing_files_that_appear_until_interrupted(stack, key_file, tmp_path):
    settings, _ = stack
    before = _photos(settings.database_url)[0]
    # given a watched folder with three photos
    folder = tmp_path / "inbox"
    library_tree(folder / "first", 3, seed=17)
    watch = _import(settings, key_file, str(folder), "--watch", "--watch-interval", "0.5", "--json")
    wait_until(lambda: _photos(settings.database_url)[0] == before + 3, timeout=120)
    # when two more appear
    library_tree(folder / "later", 2, seed=19)
    # then they are imported too, and Ctrl-C ends the watch with its summary
    wait_until(lambda: _photos(settings.database_url)[0] == before + 5, timeout=120)
    watch.send_signal(signal.SIGINT)
    code, summary, _ = _finished(watch, timeout=60)
    assert code == 130 and summary["uploaded"] == 5, summary
