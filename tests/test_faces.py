"""People by face, on real parts: dlib's real models on the real faces that packages ship, and the
whole path (API, Redis, a real worker, Postgres with pgvector) from upload to named faces, face
search, manual edits, recluster, backfill, failures and a killed worker."""

from __future__ import annotations

import io
import os
import re
import signal
import uuid
import warnings
from pathlib import Path

import httpx
import numpy as np
import psutil
import psycopg
import pytest
from PIL import Image

from photoembed.config import Settings
from photoembed.faces import samples
from photoembed.faces.dlib_model import MATCH_DISTANCE, DlibFaceModel
from photoembed.faces.quality import photo_quality
from photoembed.faces.selfcheck import reference_key, reference_path, run_face_selfcheck
from photoembed.storage import LocalStorage
from tests.conftest import Services, new_database, running_stack, stack_settings, start_api
from tests.helpers import encode, make_photo, wait_for_faces, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def faces() -> dict[str, Image.Image]:
    return samples.real_faces()


@pytest.fixture(scope="module")
def dlib_model() -> DlibFaceModel:
    return DlibFaceModel(Settings())


def _largest(found):
    return max(found, key=lambda face: face.box[2] * face.box[3])


# The face model on its own


def test_every_variant_of_a_real_face_is_found_and_stays_that_person(dlib_model, faces):
    originals = {name: _largest(dlib_model.find_faces(image)) for name, image in faces.items()}
    for name, image in faces.items():
        other = next(o for o in originals if o != name)
        for variant, changed in samples.variants(image, samples.FACE_SIDE[name]).items():
            found = dlib_model.find_faces(changed)
            # the person's own face is the closest to the original, within the match distance
            distances = [float(np.linalg.norm(f.vector - originals[name].vector)) for f in found]
            assert found and min(distances) < MATCH_DISTANCE, (name, variant, distances)
            own = found[int(np.argmin(distances))]
            assert np.linalg.norm(own.vector - originals[other].vector) > MATCH_DISTANCE
            assert 0 < own.quality <= 1


def test_photos_without_a_face_give_no_face(dlib_model):
    for name, image in samples.no_face_photos().items():
        assert dlib_model.find_faces(image) == [], name


GROUP = ["astronaut", "hopper", "cameraman"]


def test_a_group_photo_gives_every_face_left_to_right_the_three_quarter_one_too(dlib_model, faces):
    group = samples.group_photo(GROUP, faces)
    found = sorted(dlib_model.find_faces(group), key=lambda face: face.box[0])
    originals = {name: _largest(dlib_model.find_faces(image)) for name, image in faces.items()}
    assert len(found) == 3
    for face, name in zip(found, GROUP, strict=True):
        assert np.linalg.norm(face.vector - originals[name].vector) < MATCH_DISTANCE


def test_hog_finds_the_frontal_faces_only_and_either_detector_gives_the_same_person(faces):
    # given dlib's HOG detector, the default before BlazeFace
    hog, blazeface = DlibFaceModel(Settings(face_detector="hog")), DlibFaceModel(Settings())
    # then it misses the camera man, turned three quarters, in the group photo
    found = sorted(hog.find_faces(samples.group_photo(GROUP, faces)), key=lambda f: f.box[0])
    assert len(found) == 2
    # and a face either detector found has nearly the same vector (the stored faces of HOG and
    # of BlazeFace group together: migration 0009 gave them one model identity)
    for name in ("astronaut", "hopper"):
        by_hog, by_blazeface = (_largest(m.find_faces(faces[name])) for m in (hog, blazeface))
        assert np.linalg.norm(by_hog.vector - by_blazeface.vector) < MATCH_DISTANCE / 4


# The boot self-check of the face model


def test_the_face_selfcheck_passes_against_the_shipped_reference(tmp_path):
    settings = Settings(selfcheck_reference_dir=tmp_path)
    result = run_face_selfcheck(settings, DlibFaceModel(settings))
    assert result.ok, result.findings
    assert result.reference_path is not None and result.reference_path.is_file()


def test_a_recorded_face_reference_that_disagrees_is_a_finding(tmp_path):
    # given a reference recorded for these files, then changed
    settings = Settings(selfcheck_reference_dir=tmp_path)
    assert run_face_selfcheck(settings, DlibFaceModel(settings), record=True).recorded
    model = DlibFaceModel(settings)
    path = reference_path(settings, reference_key(model.load()))
    assert path.parent == tmp_path
    recorded = path.read_text().replace("0.0", "0.1", 3)
    path.write_text(recorded)
    # then the check finds the difference
    result = run_face_selfcheck(settings, model)
    assert [finding.code for finding in result.findings] == ["reference_mismatch"]


class _WarningFaceModel(DlibFaceModel):
    def _load(self):  # type: ignore[no-untyped-def]
        warnings.warn("landmark model is deprecated", DeprecationWarning, stacklevel=1)
        return super()._load()


def test_a_warning_while_loading_the_face_model_is_a_finding(tmp_path):
    settings = Settings(selfcheck_reference_dir=tmp_path)
    result = run_face_selfcheck(settings, _WarningFaceModel(settings))
    assert [finding.code for finding in result.findings] == ["load_warning"]
    assert "the face model" in result.findings[0].message


def test_a_worker_whose_face_model_is_missing_exits_without_consuming(settings, start_service):
    # given FACE_MODEL=insightface with no folder of ONNX files
    worker = start_service(
        "worker", settings, FACES_ENABLED="true", FACE_MODEL="insightface", FACE_MODEL_DIR=""
    )
    # then the boot fails and says what to do
    assert worker.wait(timeout=180) != 0
    assert "selfcheck.failed" in worker.log and "FACE_MODEL_DIR" in worker.log


# The whole path


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres, redis_server, model_cache):
    """An API and a worker with the face stage, on a database of their own (the grouping sees
    only this module's faces)."""
    folder = tmp_path_factory.mktemp("faces")
    settings = stack_settings(folder, postgres, redis_server, model_cache).model_copy(
        update={
            "database_url": new_database(postgres, "faces"),
            "faces_enabled": True,
            "max_attempts": 3,
            "retry_min_backoff_ms": 200,
            "retry_max_backoff_ms": 1000,
        }
    )
    with running_stack(settings, folder) as client:
        yield settings, client, folder


def _upload(api: httpx.Client, image: Image.Image, person_id: str | None = None) -> str:
    data = {"person_id": person_id} if person_id else {}
    response = api.post("/photos", files={"file": ("p.jpg", encode(image))}, data=data)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _faces(api: httpx.Client, photo_id: str) -> list[dict]:
    response = api.get(f"/photos/{photo_id}/faces")
    assert response.status_code == 200, response.text
    return sorted(response.json()["items"], key=lambda face: face["box"][0])


def _persons(api: httpx.Client) -> list[dict]:
    return list(api.get("/persons", params={"limit": 100}).json()["items"])


def _assignments(settings: Settings) -> dict[str, tuple[str | None, str | None]]:
    url = settings.database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, person_id, assigned_by FROM faces").fetchall()
    return {str(r[0]): (str(r[1]) if r[1] else None, r[2]) for r in rows}


@pytest.fixture(scope="module")
def people(stack, faces):
    """Grace Hopper's face grouped from unlabelled photos and named afterwards; Eileen Collins
    labelled by one upload; a group photo uploaded before either was known; photos without a
    face."""
    _, api, _ = stack
    group = _upload(api, samples.group_photo(["astronaut", "hopper"], faces))
    assert wait_for_faces(api, group)["face_count"] == 2
    assert [face["person_id"] for face in _faces(api, group)] == [None, None]  # nobody known yet

    hopper_variants = samples.variants(faces["hopper"], samples.FACE_SIDE["hopper"])
    grace_photos = [_upload(api, hopper_variants[v]) for v in ("mirror", "jpeg-q30", "dim")]
    for photo_id in grace_photos:
        assert wait_for_faces(api, photo_id)["faces_status"] == "DONE"
    unnamed = [p for p in _persons(api) if p["name"] is None]
    assert len(unnamed) == 1 and unnamed[0]["face_count"] == 4  # three photos and the group's
    grace = api.patch(f"/persons/{unnamed[0]['id']}", json={"name": "Grace"}).json()
    more_grace = [_upload(api, hopper_variants[v]) for v in ("rotate-20", "face-60px", "bright")]

    eileen = api.post("/persons", json={"name": "Eileen"}).json()
    eileen_photos = [_upload(api, faces["astronaut"], eileen["id"])]
    astronaut_variants = samples.variants(faces["astronaut"], samples.FACE_SIDE["astronaut"])
    eileen_photos += [
        _upload(api, astronaut_variants[v]) for v in ("mirror", "rotate+20", "face-50px", "flat")
    ]
    no_face = [_upload(api, image) for image in samples.no_face_photos().values()]
    for photo_id in more_grace + eileen_photos + no_face:
        assert wait_for_faces(api, photo_id)["faces_status"] == "DONE"
    return {
        "group": group,
        "grace": grace,
        "grace_photos": grace_photos + more_grace,
        "eileen": eileen,
        "eileen_photos": eileen_photos,
        "no_face": no_face,
    }


def test_a_group_photo_shows_its_faces_with_the_right_names(stack, people):
    _, api, _ = stack
    faces = _faces(api, people["group"])
    assert [face["person_name"] for face in faces] == ["Eileen", "Grace"]
    assert [face["assigned_by"] for face in faces] == ["auto", "auto"]
    for face in faces:
        _, _, w, h = face["box"]
        assert w > 100 and h > 100 and len(face["landmarks"]) == 5 and 0 < face["quality"] <= 1
        thumbnail = api.get(face["thumbnail_url"])
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(thumbnail.content)).size) <= 160


def test_every_variant_of_a_person_is_that_person_and_no_other(stack, people):
    _, api, _ = stack
    for person in ("grace", "eileen"):
        for photo_id in people[f"{person}_photos"]:
            faces = _faces(api, photo_id)
            named = [face for face in faces if face["person_id"] == people[person]["id"]]
            assert len(named) == 1, (person, photo_id, faces)
            others = {face["person_id"] for face in faces} - {people[person]["id"], None}
            assert not others, (person, photo_id, faces)
    for photo_id in people["no_face"]:
        photo = api.get(f"/photos/{photo_id}").json()
        assert (photo["faces_status"], photo["face_count"]) == ("DONE", 0)


def test_persons_list_their_faces_and_photos_found_by_face(stack, people):
    _, api, _ = stack
    listed = {p["id"]: p for p in _persons(api)}
    grace = listed[people["grace"]["id"]]
    assert grace["name"] == "Grace" and grace["face_count"] == 7  # six photos and the group
    assert grace["cover_face_id"] is not None
    gallery = api.get(f"/persons/{people['grace']['id']}/photos", params={"limit": 100}).json()
    assert people["group"] in {photo["id"] for photo in gallery["items"]}


def test_person_search_by_face_ranks_every_photo_of_the_person_above_every_other(stack, people):
    _, api, _ = stack
    for person in ("grace", "eileen"):
        theirs = {*people[f"{person}_photos"], people["group"]}
        result = api.post("/search", json={"person_id": people[person]["id"], "limit": 50}).json()
        assert result["by"] == "face"
        ranked = [hit["photo_id"] for hit in result["results"]]
        assert set(ranked[: len(theirs)]) == theirs, result
        assert all(hit["face_distance"] is not None for hit in result["results"])

    a_face = _faces(api, people["eileen_photos"][0])[0]
    by_face = api.post("/search", json={"face_id": a_face["id"], "limit": 50}).json()
    assert by_face["by"] == "face" and by_face["results"][0]["face_id"] == a_face["id"]
    eileen = {*people["eileen_photos"], people["group"]}
    assert {hit["photo_id"] for hit in by_face["results"][: len(eileen)]} == eileen

    # and a CLIP search filtered to a person known only by face gives that person's photos
    grace = {*people["grace_photos"], people["group"]}
    by_clip = api.post(
        "/search",
        json={"photo_id": people["grace_photos"][0], "filter_person_id": people["grace"]["id"]},
    ).json()
    assert by_clip["by"] == "clip" and {hit["photo_id"] for hit in by_clip["results"]} == grace

    nobody = api.post("/persons", json={"name": "No faces yet"}).json()
    response = api.post("/search", json={"person_id": nobody["id"]})
    assert response.status_code == 404  # no faces, no READY photos: nothing to search by
    unknown = api.post("/search", json={"face_id": str(uuid.uuid4())})
    assert unknown.status_code == 404 and "face" in unknown.json()["detail"]


def test_the_photo_quality_is_half_the_image_and_half_scaled_by_its_best_face():
    # worked by hand: 0.8 x (0.5 + 0.5 x 0.5) = 0.6; no face: 0.8 x 0.5 = 0.4
    assert photo_quality(0.8, 0.5) == 0.6
    assert photo_quality(0.8, None) == 0.4
    assert photo_quality(0.8, 1.0) == 0.8
    assert photo_quality(0.123456, 0.5) == 0.0926  # 0.092592 to four places


def test_the_photo_quality_counts_its_best_face(stack, people):
    settings, api, _ = stack
    url = settings.database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT p.id, p.image_quality, p.quality_score, p.quality_version, max(f.quality) "
            "FROM photos p LEFT JOIN faces f ON f.photo_id = p.id GROUP BY p.id"
        ).fetchall()
    with_faces = [row for row in rows if row[4] is not None]
    assert with_faces and len(with_faces) < len(rows)  # both kinds are checked
    for photo_id, image_quality, quality_score, version, best in rows:
        assert version == 2, photo_id
        # the rule, spelled out here rather than taken from the product
        expected = image_quality * (0.5 + 0.5 * (best or 0.0))
        assert quality_score == pytest.approx(expected, abs=1e-4), photo_id
    # a face lifts the score above the image's own half
    assert all(score > image / 2 + 1e-3 for _, image, score, _, best in with_faces if best > 0.01)
    api_photo = api.get(f"/photos/{people['no_face'][0]}").json()
    assert api_photo["quality_version"] == 2


def test_manual_edits_and_the_grouping_survive_a_recluster(stack, people):
    settings, api, folder = stack
    # given a face a user took from Grace (nobody) and one they gave to a new person
    grace_faces = [_faces(api, photo_id)[0] for photo_id in people["grace_photos"][:2]]
    unassigned = api.patch(f"/faces/{grace_faces[0]['id']}", json={"person_id": None})
    assert unassigned.status_code == 200 and unassigned.json()["assigned_by"] == "user"
    twin = api.post("/persons", json={"name": "Grace's twin"}).json()
    moved = api.patch(f"/faces/{grace_faces[1]['id']}", json={"person_id": twin["id"]}).json()
    assert moved["person_name"] == "Grace's twin"
    before = _assignments(settings)

    # when the grouping is rebuilt
    services = Services(folder)
    recluster = services("faces", settings, "recluster")
    assert recluster.wait(timeout=180) == 0, recluster.log

    # then every face has the person it had, the manual choices included, and names stay
    assert _assignments(settings) == before
    names = {p["id"]: p["name"] for p in _persons(api)}
    assert names[people["grace"]["id"]] == "Grace" and names[twin["id"]] == "Grace's twin"

    # and a merge moves the twin's face back to Grace and deletes the twin
    merged = api.post(f"/persons/{people['grace']['id']}/merge", json={"from": [twin["id"]]})
    assert merged.status_code == 200, merged.text
    assert api.get(f"/persons/{twin['id']}").status_code == 404
    assert _faces(api, people["grace_photos"][1])[0]["person_id"] == people["grace"]["id"]
    refused = api.post(f"/persons/{twin['id']}/merge", json={"from": [people["grace"]["id"]]})
    assert refused.status_code == 404
    itself = api.post(
        f"/persons/{people['grace']['id']}/merge", json={"from": [people["grace"]["id"]]}
    )
    assert itself.status_code == 422


def test_boxes_are_in_the_displayed_orientation_of_an_exif_rotated_photo(stack, faces, dlib_model):
    _, api, _ = stack
    shown = faces["hopper"]
    # stored turned a quarter, with EXIF orientation 6 saying how to turn it back for display
    stored = shown.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=92, exif=exif)
    response = api.post("/photos", files={"file": ("rotated.jpg", buffer.getvalue())})
    photo_id = response.json()["id"]
    assert wait_for_faces(api, photo_id)["face_count"] == 1
    x, y, w, h = _faces(api, photo_id)[0]["box"]
    expected = _largest(dlib_model.find_faces(shown)).box
    assert np.allclose([x, y, w, h], expected, atol=0.05 * shown.width), (x, y, w, h, expected)


def test_backfill_finds_faces_of_old_photos_and_a_stage_that_cannot_read_fails_alone(stack, faces):
    settings, api, folder = stack
    url = settings.database_url.replace("postgresql+psycopg", "postgresql")
    # given two READY photos whose face stage never ran (uploaded before it existed)
    old = _upload(api, samples.variants(faces["hopper"], 187)["flat"])
    broken = _upload(api, faces["astronaut"].rotate(5))
    for photo_id in (old, broken):
        wait_for_faces(api, photo_id)
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM faces WHERE photo_id IN (%s, %s)", (old, broken))
        conn.execute(
            "UPDATE photos SET faces_status = NULL, face_count = NULL WHERE id IN (%s, %s)",
            (old, broken),
        )
        key = conn.execute("SELECT storage_key FROM photos WHERE id = %s", (broken,)).fetchone()
    # and the bytes of one of them gone from storage
    LocalStorage(settings.storage_dir).remove(key[0])

    # when the backfill sends them to the workers
    services = Services(folder)
    backfill = services("faces", settings, "backfill", "--enqueue")
    assert backfill.wait(timeout=120) == 0, backfill.log

    # then the readable one has its face again, with its person
    assert wait_for_faces(api, old)["face_count"] == 1
    assert _faces(api, old)[0]["person_name"] == "Grace"
    # and the other ends FAILED after its attempts, saying why, while the photo stays READY
    failed = wait_for_faces(api, broken, timeout=120)
    assert failed["status"] == "READY" and failed["faces_status"] == "FAILED"
    assert "gave up after 3 attempts" in failed["faces_error"]
    assert "are not in the storage" in failed["faces_error"]

    # and a backfill in this process has only the unreadable one left, which it reports
    again = services("faces", settings, "backfill")
    assert again.wait(timeout=120) == 1
    assert "faces.backfill_deferred" in again.log and "faces.backfill_finished" in again.log
    assert '"photos": 0' in again.log and '"failed": 1' in again.log


def test_kill_9_during_the_face_stage_stores_no_face_twice(
    settings, postgres, start_service, faces
):
    settings = settings.model_copy(
        update={
            "database_url": new_database(postgres, "facekill"),
            "faces_enabled": True,
            "redis_heartbeat_timeout_ms": 3_000,
            "redis_maintenance_chance": 200_000,
            "claim_lease_seconds": 20,
            "sweep_interval_seconds": 3,
            "sweep_pending_grace_seconds": 5,
        }
    )
    url = settings.database_url.replace("postgresql+psycopg", "postgresql")

    def faces_done() -> int:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM photos WHERE faces_status = 'DONE'")
            return int(row.fetchone()[0])

    with start_api(settings, start_service) as api:
        first = start_service("worker", settings)
        first.wait_for_log("selfcheck.passed", timeout=180)
        # given sixteen group photos of two people each
        pair = ["astronaut", "hopper"]
        ids = [
            _upload(api, samples.group_photo(pair if i % 2 else pair[::-1], faces, 300 + 4 * i))
            for i in range(16)
        ]
        # when the worker is killed while faces are being found, and another one starts
        wait_until(lambda: faces_done() >= 3, timeout=180)
        first.stop(signal.SIGKILL)
        # nothing moves until the next worker starts: this is what the kill left behind
        assert faces_done() < len(ids), "every face stage was done before the kill"
        start_service("worker", settings).wait_for_log("selfcheck.passed", timeout=180)
        # then every photo ends with its two faces, none stored twice
        wait_until(lambda: faces_done() == len(ids), timeout=300, interval=1.0)
    with psycopg.connect(url) as conn:
        per_photo = conn.execute(
            "SELECT p.id, p.face_count, count(f.id) FROM photos p "
            "LEFT JOIN faces f ON f.photo_id = p.id GROUP BY p.id"
        ).fetchall()
    print(f"photos={len(ids)} faces={sum(stored for _, _, stored in per_photo)}")
    assert len(per_photo) == len(ids)
    assert {(count, stored) for _, count, stored in per_photo} == {(2, 2)}


def _worker_roles(face_queue: str) -> dict[int, str]:
    """The processes of the worker with this face queue, by pid: their WORKER_ROLE."""
    roles = {}
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            variables = dict(
                item.split("=", 1) for item in environ.read_text().split("\0") if "=" in item
            )
        except OSError:
            continue
        if variables.get("FACE_QUEUE_NAME") == face_queue and "WORKER_ROLE" in variables:
            roles[int(environ.parent.name)] = variables["WORKER_ROLE"]
    return roles


def test_the_grouping_ends_the_same_whichever_photos_came_first(
    settings, postgres, start_service, faces
):
    settings = settings.model_copy(
        update={"database_url": new_database(postgres, "faceorder"), "faces_enabled": True}
    )
    with start_api(settings, start_service) as api:
        start_service("worker", settings).wait_for_log("selfcheck.passed", timeout=180)
        # the face stage runs in processes of its own that take only the CPU the photos leave,
        # the events process (webhooks) below the photos at nice 10 (the API and `photoembed
        # worker` itself carry WORKER_ROLE=all from the settings)
        roles = _worker_roles(settings.face_queue_name)
        groups = {pid: role for pid, role in roles.items() if role != "all"}
        assert set(groups.values()) == {"photos", "faces", "events"}, roles
        expected = {"photos": (False, 0), "faces": (True, 0), "events": (False, 10)}
        for pid, role in groups.items():
            idle = os.sched_getscheduler(pid) == os.SCHED_IDLE
            assert (idle, psutil.Process(pid).nice()) == expected[role], (pid, role)

        # given unlabelled photos of the camera man that formed an unnamed person
        cameraman = samples.variants(faces["cameraman"], samples.FACE_SIDE["cameraman"])
        unlabelled = [_upload(api, cameraman[v]) for v in ("mirror", "dim", "rotate+10")]
        for photo_id in unlabelled:
            assert wait_for_faces(api, photo_id)["face_count"] == 1
        unnamed = [p for p in _persons(api) if p["name"] is None]
        assert len(unnamed) == 1 and unnamed[0]["face_count"] == 3
        # when a photo uploaded for a named person comes after them
        camera_man = api.post("/persons", json={"name": "Camera man"}).json()
        labelled = _upload(api, faces["cameraman"], camera_man["id"])
        assert wait_for_faces(api, labelled)["face_count"] == 1
        # then the named person took the unnamed one over: one person, four faces
        for photo_id in [*unlabelled, labelled]:
            assert [f["person_id"] for f in _faces(api, photo_id)] == [camera_man["id"]]
        assert [p["name"] for p in _persons(api)] == ["Camera man"]

        # and in the other order (labelled first) the unlabelled faces join the named person
        grace = api.post("/persons", json={"name": "Grace"}).json()
        assert wait_for_faces(api, _upload(api, faces["hopper"], grace["id"]))["face_count"] == 1
        hopper = samples.variants(faces["hopper"], samples.FACE_SIDE["hopper"])
        for variant in ("mirror", "dim", "rotate+10"):
            photo_id = _upload(api, hopper[variant])
            assert wait_for_faces(api, photo_id)["face_count"] == 1
            assert [f["person_id"] for f in _faces(api, photo_id)] == [grace["id"]]

        # and a named person never takes over another named one
        other = api.post("/persons", json={"name": "Someone else"}).json()
        assert wait_for_faces(api, _upload(api, cameraman["bright"], other["id"]))["face_count"]
        counts = {p["name"]: p["face_count"] for p in _persons(api)}
        assert counts == {"Camera man": 4, "Grace": 4, "Someone else": 1}, counts


def test_clip_first_no_face_is_found_before_every_waiting_photo_is_ready(
    settings, postgres, start_service, faces
):
    # (at normal CPU priority, so that the wait for the photos is what this shows)
    settings = settings.model_copy(
        update={
            "database_url": new_database(postgres, "clipfirst"),
            "faces_enabled": True,
            "face_worker_priority": "normal",
        }
    )
    url = settings.database_url.replace("postgresql+psycopg", "postgresql")
    with start_api(settings, start_service) as api:
        # given a backlog of photos with faces, waiting before any worker runs
        pair = ["astronaut", "hopper"]
        ids = [_upload(api, samples.group_photo(pair, faces, 300 + 4 * i)) for i in range(24)]
        # when the worker starts on it
        start_service("worker", settings).wait_for_log("selfcheck.passed", timeout=180)
        for photo_id in ids:
            assert wait_for_faces(api, photo_id, timeout=300)["face_count"] == 2
    # then every photo was READY before the first face was stored
    with psycopg.connect(url) as conn:
        last_ready, first_face = conn.execute(
            "SELECT (SELECT max(processed_at) FROM photos), (SELECT min(created_at) FROM faces)"
        ).fetchone()
    assert last_ready < first_face, (last_ready, first_face)


def test_a_synthetic_photo_goes_through_both_stages_untouched_by_faces(stack):
    _, api, _ = stack
    photo_id = _upload(api, make_photo(4242))
    photo = wait_for_faces(api, photo_id)
    assert photo["status"] == "READY" and photo["faces_status"] == "DONE"
    assert api.get(f"/photos/{photo_id}/embedding").status_code == 200


def test_the_face_queue_is_watched_like_the_photos_queue(stack, people):
    settings, api, _ = stack
    url = settings.database_url.replace("postgresql+psycopg", "postgresql")

    def gauges() -> dict[str, float]:
        text = api.get("/metrics").text
        found = {}
        for name, queue in (
            ("photoembed_oldest_pending_age_seconds", settings.queue_name),
            ("photoembed_oldest_pending_age_seconds", settings.face_queue_name),
            ("photoembed_dead_letters", settings.face_queue_name),
        ):
            match = re.search(rf'^{name}{{queue="{queue}"}} ([0-9.e+-]+)$', text, re.M)
            assert match, (name, queue)
            found[f"{name}:{queue}"] = float(match.group(1))
        return found

    photo_age = f"photoembed_oldest_pending_age_seconds:{settings.queue_name}"
    faces_age = f"photoembed_oldest_pending_age_seconds:{settings.face_queue_name}"
    # given no photo waiting for its vector (the backfill test may leave one face stage waiting)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM photos WHERE faces_status = 'PENDING'")
        faces_waiting = int(row.fetchone()[0])
    before = gauges()
    assert before[photo_age] == 0
    assert (before[faces_age] > 0) == (faces_waiting > 0), (before, faces_waiting)
    assert before[f"photoembed_dead_letters:{settings.face_queue_name}"] == 0

    # when a photo's face stage has waited 40 s, and a photo 45 s for its vector (under the
    # sweeper's 60 s grace: nobody touches them while we look)
    a_photo = people["no_face"][0]
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE photos SET faces_status = 'PENDING', faces_enqueued_at = now() - "
            "interval '40 seconds' WHERE id = %s",
            (a_photo,),
        )
        waiting = conn.execute(
            "INSERT INTO photos (id, library_id, storage_key, content_hash, content_type, "
            "size_bytes, width, height, status, attempts, faces_attempts, submitted_at, "
            "created_at, updated_at) "
            "SELECT gen_random_uuid(), library_id, storage_key, content_hash, content_type, "
            "size_bytes, width, height, 'PENDING', 0, 0, now() - interval '45 seconds', now(), "
            "now() "
            "FROM photos WHERE id = %s RETURNING id",
            (a_photo,),
        ).fetchone()[0]
    try:
        # then the gauges tell how long each has waited
        seen = wait_until(lambda: (g := gauges())[photo_age] > 0 and g, timeout=15)
        assert 45 <= seen[photo_age] < 65, seen
        assert seen[faces_age] >= 40 and (faces_waiting or seen[faces_age] < 60), seen
    finally:
        with psycopg.connect(url) as conn:
            conn.execute("DELETE FROM photos WHERE id = %s", (waiting,))
            conn.execute(
                "UPDATE photos SET faces_status = 'DONE', faces_enqueued_at = NULL WHERE id = %s",
                (a_photo,),
            )


def test_deleting_the_last_photo_of_a_grouped_person_removes_that_person(own_database):
    from photoembed.db import session_scope
    from photoembed.models import DEFAULT_LIBRARY_ID, Face, Person, Photo
    from photoembed.photos import remove_photos, storage_for

    # given a person the grouping made (no name) whose only face is in one photo, and a named one
    settings = own_database
    storage = storage_for(settings)
    with session_scope(settings.database_url) as session:
        library = DEFAULT_LIBRARY_ID
        unnamed = Person(id=uuid.uuid4(), library_id=library, name=None)
        named = Person(id=uuid.uuid4(), library_id=library, name="Kept")
        photo = Photo(
            id=uuid.uuid4(), library_id=library, storage_key="a" * 64, content_hash="a" * 64,
            content_type="image/jpeg", size_bytes=1, width=1, height=1, status="READY",
        )  # fmt: skip
        session.add_all([unnamed, named, photo])
        session.flush()
        for index, person in enumerate((unnamed, named)):
            session.add(
                Face(
                    photo_id=photo.id,
                    library_id=library,
                    model="m",
                    face_index=index,
                    box_x=0,
                    box_y=0,
                    box_w=1,
                    box_h=1,
                    landmarks=[],
                    score=1.0,
                    quality=1.0,
                    dim=128,
                    vector=[0.0] * 128,
                    person_id=person.id,
                    assigned_by="auto",
                )
            )
    # when the photo is deleted
    with session_scope(settings.database_url) as session:
        remove_photos(session, storage, library, [session.get(Photo, photo.id)])
    # then the unnamed person is gone with its last face, the named one stays
    with session_scope(settings.database_url) as session:
        assert session.get(Person, unnamed.id) is None
        assert session.get(Person, named.id) is not None


def test_faces_stored_under_the_hog_identity_keep_grouping_after_migration_0009(postgres):
    from alembic import command
    from alembic.config import Config

    from photoembed.cli.database import MIGRATIONS_DIR

    # given a database at revision 0008 with a face HOG found, stored under the old identity
    name = f"mig_{uuid.uuid4().hex[:8]}"
    admin = postgres.url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = postgres.url.replace("/photoembed?", f"/{name}?")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "0008")
    libpq = url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(libpq) as conn:
        photo = conn.execute(
            "INSERT INTO photos (id, storage_key, content_hash, content_type, size_bytes, width, "
            "height, status, created_at, updated_at, attempts) VALUES (gen_random_uuid(), 'k', "
            "'h', 'image/jpeg', 1, 1, 1, 'READY', now(), now(), 0) RETURNING id"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO faces (id, photo_id, model, face_index, box_x, box_y, box_w, box_h, "
            "landmarks, score, quality, dim, vector, created_at) VALUES (gen_random_uuid(), %s, "
            "'dlib:resnet-v1:55533b28a958:hog-5pt', 0, 0, 0, 1, 1, '[]', 1, 1, 128, %s, now())",
            (photo, "[" + ",".join(["0"] * 128) + "]"),
        )
    # when it is migrated
    command.upgrade(config, "head")
    # then the face has the identity the model gives now, and says HOG found it
    model = DlibFaceModel(Settings(face_detector="hog")).load().identity
    with psycopg.connect(libpq) as conn:
        assert conn.execute("SELECT model, detector FROM faces").fetchall() == [(model, "hog")]
    # and a downgrade gives the old identity back
    command.downgrade(config, "0008")
    with psycopg.connect(libpq) as conn:
        old = conn.execute("SELECT model FROM faces").fetchone()[0]
    assert old == "dlib:resnet-v1:55533b28a958:hog-5pt"
