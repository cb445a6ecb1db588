"""Persons and search on the real stack: upload people's photos, find them again, delete them."""

from __future__ import annotations

import uuid

import httpx
import pytest
from PIL import Image, ImageFilter

from photoembed.storage import LocalStorage
from tests.conftest import running_stack, stack_settings
from tests.helpers import encode, make_person_photo, wait_for_status

pytestmark = pytest.mark.slow


def _upload(api: httpx.Client, image: Image.Image, person_id: str | None = None) -> str:
    data = {"person_id": person_id} if person_id else {}
    response = api.post("/photos", files={"file": ("p.jpg", encode(image))}, data=data)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres, redis_server, model_cache):
    """One API and one worker for the whole module: the searches share one set of photos."""
    folder = tmp_path_factory.mktemp("search")
    settings = stack_settings(folder, postgres, redis_server, model_cache)
    with running_stack(settings, folder) as client:
        yield settings, client


@pytest.fixture
def settings(stack):
    return stack[0]


@pytest.fixture
def api(stack):
    return stack[1]


def upload_two_people(api: httpx.Client) -> tuple[dict, dict, dict[str, list[str]]]:
    """Ada and Bob with four READY photos each."""
    ada = api.post("/persons", json={"name": "Ada", "note": "tests"}).json()
    bob = api.post("/persons", json={"name": "Bob"}).json()
    # Fresh shots each time: the database is shared by the session, and identical bytes from
    # another test would tie with these at similarity 1.
    shots = 1000 + uuid.uuid4().int % 10**6 * 10
    photos = {
        "ada": [_upload(api, make_person_photo(1, shots + v), ada["id"]) for v in range(4)],
        "bob": [_upload(api, make_person_photo(2, shots + v), bob["id"]) for v in range(4)],
    }
    for photo_id in photos["ada"] + photos["bob"]:
        assert wait_for_status(api, photo_id, {"READY", "FAILED"})["status"] == "READY"
    return ada, bob, photos


@pytest.fixture(scope="module")
def two_people(stack):
    """Shared by the module's tests, which only read them."""
    return upload_two_people(stack[1])


def _search(api: httpx.Client, **form: object) -> dict:
    files = form.pop("files", None)
    response = api.post("/search", data={k: str(v) for k, v in form.items()}, files=files)
    assert response.status_code == 200, response.text
    return response.json()


def _storage_key(settings, photo_id: str) -> str:
    import psycopg

    with psycopg.connect(settings.database_url.replace("postgresql+psycopg", "postgresql")) as conn:
        row = conn.execute("SELECT storage_key FROM photos WHERE id = %s", (photo_id,)).fetchone()
    assert row is not None
    return str(row[0])


def _ranked(results: dict, among: set[str]) -> list[str]:
    return [hit["photo_id"] for hit in results["results"] if hit["photo_id"] in among]


def test_person_holds_their_photos_with_statuses(api, two_people):
    ada, _, photos = two_people
    body = api.get(f"/persons/{ada['id']}").json()
    assert body["name"] == "Ada" and body["note"] == "tests"
    assert sorted(p["id"] for p in body["photos"]) == sorted(photos["ada"])
    assert {p["status"] for p in body["photos"]} == {"READY"}


def test_search_by_photo_returns_itself_first_with_similarity_one(api, two_people):
    _, _, photos = two_people
    results = _search(api, photo_id=photos["ada"][0], limit=10)
    first = results["results"][0]
    assert first["photo_id"] == photos["ada"][0]
    assert first["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert first["thumbnail_url"] == f"/photos/{photos['ada'][0]}/thumbnail"


def test_search_by_a_new_photo_of_a_person_ranks_that_person_first(api, two_people):
    _, _, photos = two_people
    ours = set(photos["ada"]) | set(photos["bob"])
    for person, name in ((1, "ada"), (2, "bob")):
        query = encode(make_person_photo(person, variant=99))
        ranked = _ranked(_search(api, limit=100, files={"file": ("q.jpg", query)}), ours)
        assert ranked[0] in photos[name], (name, ranked)
        assert set(ranked[:4]) == set(photos[name])


def test_search_by_person_uses_their_ready_photos(api, two_people):
    ada, _, photos = two_people
    ours = set(photos["ada"]) | set(photos["bob"])
    ranked = _ranked(_search(api, person_id=ada["id"], limit=100), ours)
    assert set(ranked[:4]) == set(photos["ada"])


def test_text_search_and_filters(api, two_people):
    ada, _, photos = two_people
    blurred = _upload(
        api,
        make_person_photo(1, 7 + uuid.uuid4().int % 10**6 * 10).filter(ImageFilter.GaussianBlur(8)),
        ada["id"],
    )
    assert wait_for_status(api, blurred, {"READY", "FAILED"})["status"] == "READY"

    text = _search(api, text="a person in a striped shirt", filter_person_id=ada["id"], limit=50)
    assert text["query"] == "text" and text["model"].startswith("open_clip:ViT-B-32:")
    assert {hit["photo_id"] for hit in text["results"]} == {*photos["ada"], blurred}
    assert all(-1.0 <= hit["similarity"] <= 1.0 for hit in text["results"])

    blurred_quality = api.get(f"/photos/{blurred}").json()["quality_score"]
    picky = _search(
        api, person_id=ada["id"], filter_person_id=ada["id"], min_quality=blurred_quality + 1e-6
    )
    assert blurred not in {hit["photo_id"] for hit in picky["results"]}
    assert len(picky["results"]) == 4


def test_search_needs_exactly_one_query(api, two_people):
    response = api.post("/search", data={"text": "x", "photo_id": two_people[2]["ada"][0]})
    assert response.status_code == 422 and "exactly one" in response.json()["detail"]
    assert api.post("/search", data={}).status_code == 422


def test_thumbnail_is_a_small_jpeg_behind_the_key(api, two_people):
    photo_id = two_people[2]["bob"][0]
    response = api.get(f"/photos/{photo_id}/thumbnail")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    import io

    assert max(Image.open(io.BytesIO(response.content)).size) <= 256
    assert httpx.get(f"{api.base_url}/photos/{photo_id}/thumbnail").status_code == 401


def test_attach_later_and_delete_photo_and_person(settings, api):
    # people of its own: the shared ones stay as they are for the other tests
    ada, bob, photos = upload_two_people(api)
    moved = photos["bob"][0]
    assert (
        api.patch(f"/photos/{moved}", json={"person_id": ada["id"]}).json()["person_id"]
        == ada["id"]
    )

    storage = LocalStorage(settings.storage_dir)
    doomed = photos["ada"][1]
    assert api.delete(f"/photos/{doomed}").status_code == 204
    assert api.get(f"/photos/{doomed}").status_code == 404
    ours = set(photos["ada"]) | set(photos["bob"])
    assert doomed not in _ranked(_search(api, photo_id=photos["ada"][0], limit=100), ours)

    # storage is content-addressed: identical bytes share a file until the last photo goes
    unique = encode(make_person_photo(1, variant=int(uuid.uuid4().int % 10**6) + 1000))
    twins = [api.post("/photos", files={"file": ("t.jpg", unique)}).json()["id"] for _ in range(2)]
    shared_file = storage.path_for(_storage_key(settings, twins[0]))
    assert _storage_key(settings, twins[1]) == _storage_key(settings, twins[0])
    assert api.delete(f"/photos/{twins[0]}").status_code == 204
    assert shared_file.is_file()
    assert api.delete(f"/photos/{twins[1]}").status_code == 204
    assert not shared_file.exists()

    assert api.delete(f"/persons/{ada['id']}").status_code == 204
    assert api.get(f"/persons/{ada['id']}").status_code == 404
    for photo_id in [*photos["ada"], moved]:
        assert api.get(f"/photos/{photo_id}").status_code == 404
    remaining = _ranked(_search(api, person_id=bob["id"], limit=100), ours)
    assert set(remaining) == set(photos["bob"]) - {moved}
    assert storage.root.exists()


def _multipart(**fields: object) -> dict[str, tuple[None, str]]:
    """Form fields sent as multipart/form-data parts (what `curl -F` and the page send)."""
    return {name: (None, str(value)) for name, value in fields.items()}


@pytest.mark.parametrize("kind", ["text", "photo_id", "person_id"])
def test_json_and_multipart_search_give_the_same_ranking(api, two_people, kind):
    ada, _, photos = two_people
    value = {"text": "a person in a striped shirt", "photo_id": photos["ada"][0]}.get(
        kind, ada["id"]
    )
    as_json = api.post("/search", json={kind: value, "limit": 10})
    as_form = api.post("/search", files=_multipart(**{kind: value, "limit": 10}))
    assert as_json.status_code == as_form.status_code == 200, (as_json.text, as_form.text)
    ranked = [hit["photo_id"] for hit in as_json.json()["results"]]
    assert ranked == [hit["photo_id"] for hit in as_form.json()["results"]]
    assert len(ranked) == 10 and as_json.json()["query"] == kind


def test_a_search_without_exactly_one_query_says_what_it_received(api, two_people):
    both = api.post("/search", json={"text": "x", "photo_id": two_people[2]["ada"][0]})
    assert both.status_code == 422
    assert "received text and photo_id" in both.json()["detail"]
    none = api.post("/search", json={"limit": 4})
    assert none.status_code == 422 and "received none of them" in none.json()["detail"]
    unknown = api.post("/search", json={"txt": "typo"})
    assert unknown.status_code == 422 and "txt" in unknown.json()["detail"]
    assert (
        api.post("/search", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    )
