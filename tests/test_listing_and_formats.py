"""Lists that page like people expect (newest first, a cursor, stable while photos arrive), and
the formats phones save today: HEIC and AVIF, decoded by the worker like a JPEG."""

from __future__ import annotations

import io
import threading
import uuid

import httpx
import numpy as np
import pillow_heif
import pytest
from PIL import Image

from tests.helpers import encode, make_person_photo, wait_for_status, wait_until


def stored_photos(database_url: str, person_id: str) -> set[str]:
    import psycopg

    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as conn:
        rows = conn.execute("SELECT id::text FROM photos WHERE person_id = %s", (person_id,))
        return {row[0] for row in rows}


pytestmark = pytest.mark.slow


def _upload(
    api: httpx.Client, data: bytes, name: str, person_id: str | None = None
) -> httpx.Response:
    fields = {"person_id": person_id} if person_id else {}
    return api.post("/photos", files={"file": (name, data)}, data=fields)


def _pages(api: httpx.Client, path: str, limit: int, **filters: str) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        params = {"limit": limit, **filters, **({"cursor": cursor} if cursor else {})}
        body = api.get(path, params=params).json()
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def _pages_while(
    api: httpx.Client, path: str, arriving: list[str], limit: int = 2
) -> tuple[list[list[str]], list[int]]:
    """Walk `path` page by page, each next page asked only once another photo has arrived (in
    `arriving`): the pages, and how many arrived before each next page."""
    pages: list[list[str]] = []
    landed: list[int] = []
    cursor = None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        body = api.get(path, params=params).json()
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages, landed
        before = len(arriving)
        wait_until(lambda before=before: len(arriving) > before, timeout=30, interval=0.05)
        landed.append(len(arriving) - before)


def test_upload_answers_with_where_to_follow_the_photo(api):
    response = _upload(api, encode(make_person_photo(30, 1)), "a.jpg")
    assert response.status_code == 202
    body = response.json()
    assert response.headers["location"] == f"/photos/{body['id']}" == body["status_url"]
    assert api.get(response.headers["location"]).json()["id"] == body["id"]


def test_a_persons_photos_page_newest_first_and_every_photo_once_while_more_arrive(api, settings):
    person = api.post("/persons", json={"name": f"Pat {uuid.uuid4().hex[:6]}"}).json()
    first = [
        _upload(api, encode(make_person_photo(31, v)), f"{v}.jpg", person["id"]).json()["id"]
        for v in range(9)
    ]

    # while another client keeps adding photos of the same person
    stop = threading.Event()
    added: list[str] = []

    def keep_adding() -> None:
        with httpx.Client(base_url=api.base_url, headers=api.headers, timeout=30) as other:
            variant = 100
            while not stop.is_set():
                added.append(
                    _upload(
                        other, encode(make_person_photo(31, variant)), "n.jpg", person["id"]
                    ).json()["id"]
                )
                variant += 1

    adder = threading.Thread(target=keep_adding)
    adder.start()
    try:
        pages, landed_during = _pages_while(api, f"/persons/{person['id']}/photos", added)
    finally:
        stop.set()
        adder.join()
    # the walk really raced the uploads: new photos landed before each of its next pages
    assert len(pages) >= 5 and min(landed_during) >= 1, landed_during

    seen = [photo_id for page in pages for photo_id in page]
    assert len(seen) == len(set(seen)), "a photo came back twice"
    assert set(first) <= set(seen), "a photo that existed before the walk was skipped"
    assert seen[: len(pages[0])] != first[:2]  # newest first, not upload order
    assert [p for p in seen if p in first] == list(reversed(first))
    # the same walk through /photos?person_id= and the person's first page agree
    by_query = [i for page in _pages(api, "/photos", limit=4, person_id=person["id"]) for i in page]
    assert set(by_query) == set(first) | set(added)
    shown = api.get(f"/persons/{person['id']}").json()
    assert [p["id"] for p in shown["photos"]] == by_query[: len(shown["photos"])]


def test_photos_filter_by_status_and_persons_page_by_name(api):
    # given a photo no worker has taken (none runs here)
    waiting = _upload(api, encode(make_person_photo(34, 7)), "w.jpg").json()["id"]
    pending = api.get("/photos", params={"status": "PENDING", "limit": 200}).json()["items"]
    assert waiting in {p["id"] for p in pending}
    assert {p["status"] for p in pending} == {"PENDING"}
    ready = api.get("/photos", params={"status": "READY", "limit": 200}).json()["items"]
    assert waiting not in {p["id"] for p in ready}
    assert all(p["status"] == "READY" for p in ready)
    assert api.get("/photos", params={"status": "SOMETHING"}).status_code == 422
    assert api.get("/photos", params={"cursor": "not-a-cursor"}).status_code == 422

    tag = uuid.uuid4().hex[:6]
    made = [api.post("/persons", json={"name": f"{tag} {n}"}).json()["id"] for n in "edcba"]
    seen = [i for page in _pages(api, "/persons", limit=2) for i in page]
    ours = [i for i in seen if i in made]
    assert ours == list(reversed(made))  # by name: "a" .. "e"
    assert len(seen) == len(set(seen))


def _heif(image: Image.Image, fmt: str, orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, exif=exif.tobytes(), quality=92)
    return buffer.getvalue()


def _vector(api: httpx.Client, photo_id: str) -> np.ndarray:
    assert wait_for_status(api, photo_id, {"READY", "FAILED"})["status"] == "READY"
    return np.asarray(api.get(f"/photos/{photo_id}/embedding").json()["vector"])


def test_heic_and_avif_photos_end_ready_with_the_vector_of_the_same_picture(
    settings, api, start_service
):
    pillow_heif.register_heif_opener()
    worker = start_service("worker", settings)
    worker.wait_for_log("selfcheck.passed")
    # given the same picture, held the way a phone holds it (EXIF orientation 6), in three formats
    picture = make_person_photo(32, 1, size=(640, 480))
    exif = Image.Exif()
    exif[0x0112] = 6
    uploads = {
        "jpeg": encode(picture, exif=exif, quality=92),
        "heic": _heif(picture, "HEIF", orientation=6),
        "avif": _heif(picture, "AVIF", orientation=6),
    }
    ids = {}
    for name, data in uploads.items():
        response = _upload(api, data, f"photo.{name}")
        assert response.status_code == 202, (name, response.text)
        ids[name] = response.json()["id"]
    vectors = {name: _vector(api, photo_id) for name, photo_id in ids.items()}

    # then they embed alike, upright, and a rotated reading would not
    upright = encode(picture.rotate(-90, expand=True), quality=92)
    sideways = encode(picture, quality=92)
    checks = {
        name: _vector(api, _upload(api, data, f"{name}.jpg").json()["id"])
        for name, data in (("upright", upright), ("sideways", sideways))
    }
    for name in ("heic", "avif"):
        similarity = float(vectors[name] @ vectors["jpeg"])
        print(f"{name} vs jpeg: cosine {similarity:.5f}")
        assert similarity > 0.999
        assert float(vectors[name] @ checks["upright"]) > float(vectors[name] @ checks["sideways"])
        info = api.get(f"/photos/{ids[name]}").json()
        assert info["content_type"] == f"image/{name if name == 'avif' else 'heif'}"
        thumbnail = api.get(f"/photos/{ids[name]}/thumbnail")
        assert thumbnail.status_code == 200
        assert (
            Image.open(io.BytesIO(thumbnail.content)).size[1]
            > Image.open(io.BytesIO(thumbnail.content)).size[0]
        )


def test_heic_and_avif_follow_the_hostile_input_rules(settings, start_service, http_client):
    pillow_heif.register_heif_opener()
    settings = settings.model_copy(update={"max_image_pixels": 500_000})
    service = start_service("api", settings)
    service.wait_for_log("Uvicorn running on", timeout=60)
    client = http_client(settings.api_port)
    picture = make_person_photo(33, 1, size=(480, 640))
    for fmt in ("HEIF", "AVIF"):
        data = _heif(picture, fmt)
        truncated = _upload(client, data[: len(data) * 2 // 3], "cut")
        assert truncated.status_code == 415 and "truncated" in truncated.json()["detail"], fmt
        big = _upload(client, _heif(picture.resize((1000, 800)), fmt), "big")
        assert big.status_code == 422 and "1000x800" in big.json()["detail"], fmt
        assert _upload(client, data, "ok").status_code == 202, fmt
