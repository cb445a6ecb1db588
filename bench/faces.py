"""The face stage: detection accuracy on labelled scenes, grouping through the service, and what
faces cost the main job (the drain with faces on and off)."""

from __future__ import annotations

import argparse
import itertools
import re
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from harness import (
    CPU_MIX,
    GPU_MIX,
    REPO,
    Stack,
    burst_seconds,
    client_for,
    cpu_seconds,
    fresh_database,
    libpq,
    photo_set,
    start_api,
    upload_all,
    wait_ready,
)
from PIL import Image
from prometheus_client import REGISTRY

from photoembed.config import Settings
from photoembed.faces import samples as face_samples
from photoembed.faces.dlib_model import DlibFaceModel
from photoembed.samples import encode
from photoembed.sizing import resolve


def face_cases() -> list[tuple[str, Image.Image, list[str]]]:
    """(name, photo, who is in it left to right): the package faces, their variants, group
    photos pasted from several faces, and photos without a face."""
    faces = face_samples.real_faces()
    cases = []
    for person, image in faces.items():
        cases.append((f"{person}/original", image, [person]))
        side = face_samples.FACE_SIDE[person]
        for variant, changed in face_samples.variants(image, side).items():
            cases.append((f"{person}/{variant}", changed, [person]))
    for people, height in (
        (["astronaut", "hopper"], 420),
        (["hopper", "astronaut"], 300),
        (["hopper", "astronaut", "hopper"], 260),
        (["astronaut", "hopper", "astronaut"], 200),
        (["astronaut", "hopper", "cameraman"], 420),
        (["cameraman", "hopper", "astronaut"], 260),
    ):
        group = face_samples.group_photo(people, faces, height)
        cases.append((f"group/{'+'.join(people)}@{height}", group, people))
    cases += [(f"no-face/{n}", image, []) for n, image in face_samples.no_face_photos().items()]
    return cases


def _face_side(name: str) -> int:
    """The face's width in the case, for the 60 px goal (the scaled variants are smaller)."""
    match = re.search(r"face-(\d+)px", name)
    return int(match.group(1)) if match else 60


def face_accuracy(cases: list[tuple[str, Image.Image, list[str]]]) -> dict[str, Any]:
    """The dlib model in this process, on one core: detection recall (a face found within the
    match distance of that person's original face), false faces, and the CPU it took."""
    model = DlibFaceModel(resolve(Settings()))
    model.load()
    originals = {}
    for name, image, people in cases:
        if name.endswith("/original"):
            found = model.find_faces(image)
            originals[people[0]] = max(found, key=lambda f: f.box[2]).vector
    expected = found_ok = small_expected = small_found = false_on_faces = 0
    false_on_empty, misses, faces_found = [], [], 0
    started = time.process_time()
    for name, image, people in cases:
        found = model.find_faces(image)
        faces_found += len(found)
        unmatched = list(found)
        for person in people:
            near = [
                f
                for f in unmatched
                if np.linalg.norm(f.vector - originals[person]) < model.match_distance()
            ]
            small = _face_side(name) < 60
            expected += not small
            small_expected += small
            if near:
                unmatched.remove(near[0])
                found_ok += not small
                small_found += small
            else:
                misses.append(name)
        if people:
            false_on_faces += len(unmatched)
        elif unmatched:
            false_on_empty.append(name)
    seconds = time.process_time() - started
    face_photos = sum(1 for _, _, people in cases if people)
    steps = {
        step: 1000
        * (REGISTRY.get_sample_value("photoembed_face_step_seconds_sum", {"step": step}) or 0)
        for step in ("scale", "detect", "align", "describe")
    }
    return {
        "photos": len(cases),
        "recall_faces_60px_or_more": found_ok / expected,
        "recall_faces_40_to_50px": small_found / small_expected,
        "missed": misses,
        "false_faces_per_photo_with_faces": false_on_faces / face_photos,
        "photos_without_a_face": len(cases) - face_photos,
        "false_faces_on_photos_without_a_face": false_on_empty,
        "cpu_ms_per_photo": 1000 * seconds / len(cases),
        "faces_per_s_per_core": faces_found / seconds,
        "ms_per_photo": {step: round(steps[step] / len(cases), 1) for step in ("scale", "detect")},
        "ms_per_face": {
            step: round(steps[step] / max(1, faces_found), 1) for step in ("align", "describe")
        },
    }


def _upload_image(client: httpx.Client, image: Image.Image) -> str:
    response = client.post("/photos", files={"file": ("face.jpg", encode(image, quality=92))})
    response.raise_for_status()
    photo_id: str = response.json()["id"]
    return photo_id


def wait_faces(settings: Settings, ids: list[str], timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(libpq(settings), autocommit=True) as conn:
        while time.monotonic() < deadline:
            done = conn.execute(
                "SELECT count(*) FROM photos WHERE id = ANY(%s::uuid[]) "
                "AND faces_status IN ('DONE', 'FAILED')",
                (ids,),
            ).fetchone()
            if done and done[0] == len(ids):
                return
            time.sleep(0.2)
    raise SystemExit(f"faces not done after {timeout}s")


def face_grouping(stack: Stack, cases: list[tuple[str, Image.Image, list[str]]]) -> dict[str, Any]:
    """Every case uploaded, unlabelled, to the real service on a database of its own; the
    automatic grouping scored against who is in each photo: purity (the share of grouped faces
    whose person holds mostly that identity) and completeness (the share of each identity's
    faces in its largest person)."""
    settings = stack.settings(database_url=fresh_database(stack, "faces"), faces_enabled=True)
    truth: dict[str, list[str]] = {}
    with ExitStack() as running:
        start_api(stack, settings, "api-faces", running)
        worker = stack.start("worker", settings, "worker-faces")
        running.callback(worker.stop)
        client = client_for(settings)
        for _, image, people in cases:
            truth[_upload_image(client, image)] = people
        wait_faces(settings, list(truth))
    with psycopg.connect(libpq(settings)) as conn:
        rows = conn.execute(
            "SELECT photo_id::text, box_x, person_id::text FROM faces ORDER BY photo_id, box_x"
        ).fetchall()
    by_photo: dict[str, list[str | None]] = {}
    for photo_id, _, person_id in rows:
        by_photo.setdefault(photo_id, []).append(person_id)
    labelled: list[tuple[str, str | None]] = []  # (identity, person) for faces we can name
    unlabelled = 0
    for photo_id, people in truth.items():
        persons = by_photo.get(photo_id, [])
        if len(persons) == len(people):
            labelled += list(zip(people, persons, strict=True))
        else:
            unlabelled += len(persons)
    grouped = [(who, person) for who, person in labelled if person is not None]
    clusters: dict[str, list[str]] = {}
    for who, person in grouped:
        clusters.setdefault(person, []).append(who)  # type: ignore[arg-type]
    majority = sum(max(members.count(w) for w in set(members)) for members in clusters.values())
    identities = {who for who, _ in labelled}
    complete = 0
    for who in identities:
        persons = [person for w, person in labelled if w == who]
        complete += max(persons.count(p) for p in set(persons))
    strays = {
        who: len([p for w, p in labelled if w == who and p != _main(labelled, who)])
        for who in identities
    }
    return {
        "faces_labelled": len(labelled),
        "faces_in_photos_with_unexpected_counts": unlabelled,
        "persons": len(clusters),
        "purity": majority / len(grouped) if grouped else 0.0,
        "completeness": complete / len(labelled) if labelled else 0.0,
        "faces_not_in_their_persons_main_group": strays,
    }


def _main(labelled: list[tuple[str, str | None]], who: str) -> str | None:
    persons = [person for w, person in labelled if w == who]
    return max(set(persons), key=persons.count)


def face_cost(
    stack: Stack, photos: list[Path], burst: list[Path], rounds: int = 2
) -> dict[str, Any]:
    """A backlog drained with the face stage off and on, alternating, `rounds` times each (this
    machine drifts by 10-30% within a run; each side keeps its best round, as the ceilings and
    the service do): the CLIP stage's drain rate (first READY to last) both ways, and the
    worker's CPU per photo until the faces are done too; then, to the same warm worker, a user's
    `burst` (first upload to last READY)."""
    result: dict[str, Any] = {}
    for _round, faces_on in itertools.product(range(rounds), (False, True)):
        settings = stack.settings(faces_enabled=faces_on)
        with ExitStack() as running:
            start_api(stack, settings, "api-face-cost", running)
            ids, _ = upload_all(client_for(settings), photos, clients=16)
            worker = stack.start("worker", settings, "worker-face-cost")
            running.callback(worker.stop)
            assert worker.process is not None
            worker.wait_for_log("Worker process is ready", timeout=300)
            before = cpu_seconds(worker.process.pid)
            ready = sorted(at for at, _ in wait_ready(settings, ids, timeout=1800))
            if faces_on:
                wait_faces(settings, ids)
            spent = cpu_seconds(worker.process.pid) - before
            text = httpx.get(f"http://127.0.0.1:{settings.metrics_port}/", timeout=10).text
            burst_rate = len(burst) / burst_seconds(settings, client_for(settings), burst)
        key = "faces_on" if faces_on else "faces_off"
        result.setdefault(f"{key}_burst_rounds", []).append(round(burst_rate, 2))
        drain = (len(ready) - 1) / max(1e-9, ready[-1] - ready[0])
        result.setdefault(f"{key}_rounds", []).append(round(drain, 2))
        if drain < result.get(key, {}).get("drain_photos_per_s", 0.0):
            continue
        result[key] = {
            "drain_photos_per_s": drain,
            "worker_cpu_ms_per_photo": 1000 * spent / len(photos),
        }
        if faces_on:
            result[key]["face_steps_ms_per_photo"] = {
                step: round(1000 * float(value) / len(photos), 1)
                for step, value in re.findall(
                    r'^photoembed_face_step_seconds_sum{step="(\w+)"} ([0-9.e+-]+)$', text, re.M
                )
            }
    off, on = result["faces_off"], result["faces_on"]
    for key in ("faces_off", "faces_on"):
        result[key]["burst_photos_per_s"] = max(result[f"{key}_burst_rounds"])
    result["burst_faces_on_vs_off"] = on["burst_photos_per_s"] / off["burst_photos_per_s"]
    result["faces_on_vs_off"] = on["drain_photos_per_s"] / off["drain_photos_per_s"]
    result["drain_lost_share"] = 1 - result["faces_on_vs_off"]
    result["face_cpu_share"] = 1 - off["worker_cpu_ms_per_photo"] / on["worker_cpu_ms_per_photo"]
    return result


def run_faces(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    cases = face_cases()
    photos = photo_set(REPO / ".cache" / "bench-photos", CPU_MIX, args.photos)
    burst = photo_set(REPO / ".cache" / "bench-burst", GPU_MIX, 24)  # the pipeline's burst
    return {
        "accuracy": face_accuracy(cases),
        "grouping": face_grouping(stack, cases),
        "cost": face_cost(stack, photos, burst),
    }


def print_faces(faces: dict[str, Any]) -> None:
    accuracy, grouping, cost = faces["accuracy"], faces["grouping"], faces["cost"]
    print(
        f"\nfaces: recall {accuracy['recall_faces_60px_or_more']:.2f} (60 px or more, goal 1), "
        f"{accuracy['recall_faces_40_to_50px']:.2f} (40-50 px); false faces "
        f"{accuracy['false_faces_per_photo_with_faces']:.2f} per photo with faces, "
        f"{len(accuracy['false_faces_on_photos_without_a_face'])} on "
        f"{accuracy['photos_without_a_face']} photos without one (goal 0); "
        f"{accuracy['faces_per_s_per_core']:.1f} faces/s per core, "
        f"{accuracy['cpu_ms_per_photo']:.0f} CPU ms per photo (scale "
        f"{accuracy['ms_per_photo']['scale']} and detect {accuracy['ms_per_photo']['detect']}"
        f" ms a photo; align "
        f"{accuracy['ms_per_face']['align']} and describe {accuracy['ms_per_face']['describe']}"
        f" ms a face)"
    )
    print(
        f"grouping: purity {grouping['purity']:.2f}, completeness {grouping['completeness']:.2f} "
        f"over {grouping['faces_labelled']} faces in {grouping['persons']} persons"
    )
    print(
        f"photos to READY (a backlog drained): {cost['faces_on']['drain_photos_per_s']:.2f} "
        f"photos/s with the defaults (faces on) = {cost['faces_on_vs_off']:.2f}x the "
        f"{cost['faces_off']['drain_photos_per_s']:.2f} with faces off (goal 0.9; best of rounds "
        f"{cost['faces_on_rounds']} and {cost['faces_off_rounds']})"
        + (
            f", {cost['faces_on_vs_naive']:.2f}x the naive loop (goal 1.3)"
            if "faces_on_vs_naive" in cost
            else ""
        )
        + f"; the face stage's share of the worker's CPU {cost['face_cpu_share']:.0%}; "
        f"face steps, CPU ms a photo: {cost['faces_on'].get('face_steps_ms_per_photo')}"
    )
    print(
        f"a burst of 24 mixed photos to the warm worker: {cost['faces_on']['burst_photos_per_s']:.2f}"
        f" photos/s with the defaults (faces on) = {cost['burst_faces_on_vs_off']:.2f}x the "
        f"{cost['faces_off']['burst_photos_per_s']:.2f} with faces off (best of rounds "
        f"{cost['faces_on_burst_rounds']} and {cost['faces_off_burst_rounds']})"
        + (
            f", {cost['burst_faces_on_vs_pipeline_limit']:.2f}x the limit of its stages (goal 0.8)"
            if "burst_faces_on_vs_pipeline_limit" in cost
            else ""
        )
    )
