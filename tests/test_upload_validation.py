"""What the API refuses, and why: every refusal is a 4xx with a reason, and leaves no row behind."""

from __future__ import annotations

import psycopg
import pytest

from photoembed.config import Settings
from tests.helpers import encode, make_photo


def _photo_count(settings: Settings) -> int:
    url = settings.database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url) as conn:
        (count,) = conn.execute("SELECT count(*) FROM photos").fetchone()
    return int(count)


JPEG = encode(make_photo(5))


@pytest.mark.parametrize(
    ("name", "payload", "status", "reason"),
    [
        ("notes.jpg", b"just some text, not a photo\n" * 20, 415, "not a recognised image"),
        ("page.jpg", b"<!doctype html><html><body>hi</body></html>", 415, "not a recognised image"),
        ("empty.jpg", b"", 400, "empty"),
        ("cut.jpg", JPEG[: len(JPEG) // 2], 415, "truncated"),
        ("tiny.png", encode(make_photo(6, size=(8, 8)), "PNG"), 422, "at least"),
    ],
)
def test_bad_uploads_get_a_4xx_with_a_reason(settings, api, name, payload, status, reason):
    before = _photo_count(settings)
    response = api.post("/photos", files={"file": (name, payload, "image/jpeg")})
    assert response.status_code == status, response.text
    assert reason in response.json()["detail"]
    assert _photo_count(settings) == before


def test_too_large_upload_is_refused_with_413(settings, start_service):
    import httpx

    settings = settings.model_copy(update={"max_upload_bytes": 100_000})
    service = start_service("api", settings)
    service.wait_for_log("Uvicorn running on", timeout=60)
    big = encode(make_photo(7, size=(1600, 1200)), quality=100)
    assert len(big) > 100_000
    response = httpx.post(
        f"http://127.0.0.1:{settings.api_port}/photos",
        files={"file": ("big.jpg", big, "image/jpeg")},
        headers={"Authorization": "Bearer test-key-1"},
    )
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_too_many_pixels_is_refused_before_decoding(settings, start_service):
    import httpx

    settings = settings.model_copy(update={"max_image_pixels": 100_000})
    service = start_service("api", settings)
    service.wait_for_log("Uvicorn running on", timeout=60)
    response = httpx.post(
        f"http://127.0.0.1:{settings.api_port}/photos",
        files={"file": ("wide.png", encode(make_photo(8, size=(800, 600)), "PNG"), "image/png")},
        headers={"Authorization": "Bearer test-key-1"},
    )
    assert response.status_code == 422
    assert "800x600" in response.json()["detail"]


def test_requests_without_a_valid_key_get_401(api):
    import httpx

    base = str(api.base_url)
    assert httpx.post(f"{base}/photos", files={"file": ("a.jpg", JPEG)}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (
        httpx.get(f"{base}/photos/00000000-0000-0000-0000-000000000000", headers=wrong).status_code
        == 401
    )
    assert httpx.get(f"{base}/healthz").status_code == 200
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_api_outside_dev_refuses_to_start_without_real_keys(settings, start_service):
    for keys in ("", "change-me"):
        service = start_service("api", settings, API_KEYS=keys)
        assert service.wait(timeout=60) != 0
        assert "API_KEYS must hold at least one real key" in service.log


def test_openapi_documents_every_route_with_a_description_and_examples(api):
    spec = api.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary") and (
                operation.get("description") or path in ("/healthz",)
            ), (method, path)
    schemas = spec["components"]["schemas"]
    for name in ("PhotoOut", "PersonOut", "SearchOut", "EmbeddingOut"):
        assert schemas[name].get("examples"), name
    assert {"/photos", "/photos/{photo_id}", "/persons", "/search", "/metrics"} <= set(
        spec["paths"]
    )
    assert api.get("/docs").status_code == 200
