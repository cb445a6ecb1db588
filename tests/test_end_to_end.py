"""The whole path on real parts: HTTP upload -> Postgres PENDING -> Redis -> Dramatiq worker with the
real OpenCLIP loading code -> 512-d unit vector and quality score in pgvector -> READY."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from photoembed.config import Settings
from photoembed.storage import LocalStorage
from tests.helpers import encode, make_photo, wait_for_status

pytestmark = pytest.mark.slow


def _libpq(settings: Settings) -> str:
    return settings.database_url.replace("postgresql+psycopg", "postgresql")


def test_uploaded_photo_ends_ready_with_a_unit_vector_in_postgres(settings, api, start_service):
    # given a running worker
    worker = start_service("worker", settings)
    worker.wait_for_log("selfcheck.passed")

    # when a photo is uploaded over HTTP
    response = api.post("/photos", files={"file": ("me.jpg", encode(make_photo(1)), "image/jpeg")})

    # then it is accepted as PENDING and ends READY with a quality score
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "PENDING"
    photo = wait_for_status(api, body["id"], {"READY", "FAILED"})
    assert photo["status"] == "READY", photo
    assert 0.0 <= photo["quality_score"] <= 1.0
    assert photo["model"].startswith("open_clip:ViT-B-32:openai:")
    assert photo["model"].endswith(":quickgelu")

    # and Postgres holds one 512-d, L2-normalised vector for it
    with psycopg.connect(_libpq(settings)) as conn:
        rows = conn.execute(
            "SELECT vector::text, dim, quick_gelu, vector_dims(vector) FROM embeddings "
            "WHERE photo_id = %s",
            (body["id"],),
        ).fetchall()
    assert len(rows) == 1
    vector = np.array([float(v) for v in rows[0][0].strip("[]").split(",")])
    assert rows[0][1] == 512 and rows[0][3] == 512 and rows[0][2] is True
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-4

    # and the API serves the same vector
    served = api.get(f"/photos/{body['id']}/embedding").json()
    assert served["dim"] == 512
    assert np.allclose(served["vector"], vector, atol=1e-6)


def test_photo_that_passes_the_api_but_cannot_be_decoded_ends_failed(settings, api, start_service):
    # given a photo accepted by the API whose stored file is damaged before the worker sees it
    response = api.post(
        "/photos", files={"file": ("a.png", encode(make_photo(2), "PNG"), "image/png")}
    )
    assert response.status_code == 202
    photo_id = response.json()["id"]
    with psycopg.connect(_libpq(settings)) as conn:
        (key,) = conn.execute(
            "SELECT storage_key FROM photos WHERE id = %s", (photo_id,)
        ).fetchone()
    LocalStorage(settings.storage_dir).path_for(key).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)

    # when the worker processes it
    worker = start_service("worker", settings)
    worker.wait_for_log("selfcheck.passed")

    # then it ends FAILED with a readable error, not stuck and not retried
    photo = wait_for_status(api, photo_id, {"READY", "FAILED"})
    assert photo["status"] == "FAILED"
    assert "image" in photo["error"]
    assert photo["attempts"] == 1
    assert api.get(f"/photos/{photo_id}/embedding").status_code == 404


def test_photo_whose_file_vanished_is_retried_then_fails_naming_the_storage_setting(
    settings, api, start_service
):
    settings = settings.model_copy(
        update={"max_attempts": 3, "retry_min_backoff_ms": 200, "retry_max_backoff_ms": 400}
    )
    response = api.post("/photos", files={"file": ("b.jpg", encode(make_photo(3)), "image/jpeg")})
    photo_id = response.json()["id"]
    with psycopg.connect(_libpq(settings)) as conn:
        (key,) = conn.execute(
            "SELECT storage_key FROM photos WHERE id = %s", (photo_id,)
        ).fetchone()
    LocalStorage(settings.storage_dir).path_for(key).unlink()

    worker = start_service("worker", settings)
    worker.wait_for_log("selfcheck.passed")

    # a missing file is not the photo's fault: retried, then FAILED with the setting to check
    photo = wait_for_status(api, photo_id, {"READY", "FAILED"})
    assert photo["status"] == "FAILED"
    assert photo["attempts"] == 3
    assert "gave up after 3 attempts" in photo["error"]
    assert "STORAGE_URL=file://" in photo["error"]
    assert worker.log.count('"event": "photo.retrying"') == 2
