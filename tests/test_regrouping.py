"""`photoembed faces recluster` at size, on a real Postgres: the grouping rebuilt on a snapshot and
swapped in at the end, photos grouped meanwhile, user choices kept, nothing changed by a crash."""

from __future__ import annotations

import uuid
from collections import Counter

import numpy as np
import psycopg
import pytest

from photoembed.db import get_sessionmaker, session_scope
from photoembed.faces import regrouping
from photoembed.faces.grouping import DatabaseGrouping, GroupingRules, lock_grouping, place
from photoembed.models import DEFAULT_LIBRARY_ID, Face, Photo
from photoembed.seeding import seed_library
from tests.conftest import new_database

pytestmark = pytest.mark.slow

MODEL = "test-faces:seeded"
LIBRARY = DEFAULT_LIBRARY_ID
RULES = GroupingRules(match_distance=0.5, min_faces=2)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg", "postgresql")


def _assignments(url: str) -> dict[uuid.UUID, tuple[uuid.UUID | None, str | None]]:
    with psycopg.connect(_libpq(url)) as conn:
        rows = conn.execute("SELECT id, person_id, assigned_by FROM faces").fetchall()
    return {face_id: (person_id, assigned_by) for face_id, person_id, assigned_by in rows}


@pytest.fixture
def library(postgres) -> tuple[str, dict[uuid.UUID, uuid.UUID]]:
    """3,000 photos with ~2,700 faces of 60 people, each face with its person (as seeded: the
    truth); a tenth of the persons named."""
    url = new_database(postgres, "regroup")
    seed_library(_libpq(url), 3000, clip_model="test-clip", face_model=MODEL)
    truth = {face: person for face, (person, _) in _assignments(url).items()}
    assert person_count(truth) == 60
    return url, truth


def person_count(assignment: dict[uuid.UUID, uuid.UUID]) -> int:
    return len(set(assignment.values()))


def test_recluster_puts_back_misplaced_faces_and_keeps_ids_names_and_user_choices(library):
    url, truth = library
    # given a tenth of the faces grouped with the wrong person (a different one each), and five
    # faces a user placed
    faces = list(truth)
    persons = sorted(set(truth.values()))
    rng = np.random.default_rng(3)
    misplaced = [faces[i] for i in rng.choice(len(faces), len(faces) // 10, replace=False)]
    chosen = [face for face in faces if face not in set(misplaced)][:5]
    wrong_so_far: Counter[uuid.UUID] = Counter()
    with psycopg.connect(_libpq(url)) as conn:
        for face in misplaced:
            wrong_so_far[truth[face]] += 1
            shift = wrong_so_far[truth[face]]
            wrong = persons[(persons.index(truth[face]) + shift) % len(persons)]
            conn.execute("UPDATE faces SET person_id = %s WHERE id = %s", (wrong, face))
        conn.execute(
            "UPDATE faces SET person_id = NULL, assigned_by = 'user' WHERE id = ANY(%s)",
            (chosen[:3],),
        )
        for face in chosen[3:]:  # a user confirmed these
            conn.execute(
                "UPDATE faces SET assigned_by = 'user' WHERE id = %s AND person_id = %s",
                (face, truth[face]),
            )
        names_before = dict(conn.execute("SELECT id, name FROM persons").fetchall())

    # when the grouping is rebuilt
    result = regrouping.recluster(get_sessionmaker(url), LIBRARY, MODEL, RULES, stream=None)

    # then every automatic face is back with its own person (same ids), user choices stand
    after = _assignments(url)
    for face, person in truth.items():
        if face in chosen:
            continue
        assert after[face] == (person, "auto"), face
    assert all(after[face] == (None, "user") for face in chosen[:3])
    assert all(after[face] == (truth[face], "user") for face in chosen[3:])
    assert result.changed == len(misplaced) and result.persons_made == 0
    with psycopg.connect(_libpq(url)) as conn:
        assert dict(conn.execute("SELECT id, name FROM persons").fetchall()) == names_before


def test_photos_grouped_while_the_recluster_plans_are_grouped_under_the_new_grouping(library):
    url, truth = library
    # given a plan made on a snapshot with two faces of one person misplaced
    face, person = next(iter(truth.items()))
    taken = next(f for f, p in truth.items() if p == person and f != face)
    others = [p for p in sorted(set(truth.values())) if p != person]
    with psycopg.connect(_libpq(url)) as conn:
        conn.execute("UPDATE faces SET person_id = %s WHERE id = %s", (others[0], face))
        conn.execute("UPDATE faces SET person_id = %s WHERE id = %s", (others[1], taken))
    factory = get_sessionmaker(url)
    with factory() as session:
        snapshot = regrouping.take_snapshot(session, LIBRARY, MODEL)
    plan = regrouping.plan(snapshot, RULES, stream=None)

    # when, before the swap, a new photo's face of that person is grouped (the lock is free) and
    # a user takes the other misplaced face away from everyone
    with session_scope(url) as session:
        lock_grouping(session, LIBRARY)
        near = session.get(Face, face)
        assert near is not None
        photo = Photo(
            library_id=LIBRARY,
            status="READY",
            storage_key="new",
            content_hash="0" * 64,
            content_type="image/jpeg",
            size_bytes=1,
            width=1,
            height=1,
        )
        session.add(photo)
        session.flush()
        arrived = Face(
            photo_id=photo.id,
            library_id=LIBRARY,
            model=MODEL,
            detector="blazeface",
            face_index=9,
            box_x=0,
            box_y=0,
            box_w=10,
            box_h=10,
            landmarks=[],
            score=0.9,
            quality=0.5,
            dim=128,
            vector=(np.asarray(near.vector) + 0.001).tolist(),
        )
        session.add(arrived)
        session.flush()
        # grouped live while the snapshot still has the misplaced face: it may follow it
        place(DatabaseGrouping(session, LIBRARY), arrived.id, RULES)
        arrived_id = arrived.id
    with psycopg.connect(_libpq(url)) as conn:
        conn.execute(
            "UPDATE faces SET person_id = NULL, assigned_by = 'user' WHERE id = %s", (taken,)
        )
    with factory() as session, session.begin():
        counts = regrouping.swap(session, LIBRARY, MODEL, plan, RULES)

    # then the misplaced face is back, the user's choice stands, the new face is with its person
    after = _assignments(url)
    assert after[face] == (person, "auto")
    assert after[taken] == (None, "user")
    assert after[arrived_id] == (person, "auto")
    assert counts == (1, 1, 1)  # changed, a user's choice kept, placed again


def test_a_recluster_that_fails_in_its_swap_changes_nothing(library, monkeypatch):
    url, truth = library
    face, person = next(iter(truth.items()))
    other = next(p for p in truth.values() if p != person)
    with psycopg.connect(_libpq(url)) as conn:
        conn.execute("UPDATE faces SET person_id = %s WHERE id = %s", (other, face))
    before = _assignments(url)

    def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(regrouping, "drop_empty_unnamed", broken)
    with pytest.raises(RuntimeError, match="went away"):
        regrouping.recluster(get_sessionmaker(url), LIBRARY, MODEL, RULES, stream=None)
    assert _assignments(url) == before


@pytest.mark.parametrize(
    "partition", ["persons with mistakes", "one cell", "a cell each", "all unplaced"]
)
def test_the_neighbours_are_exactly_every_face_against_all(partition):
    # given 4,000 faces of 90 people, 1,200 photos, and a partition of them: the people with one
    # face in ten misplaced or with nobody, all in one cell, or each face alone
    rng = np.random.default_rng(3)
    people = rng.integers(0, 90, 4000)
    centres = 0.05 * rng.standard_normal((90, 128)).astype(np.float32)
    vectors = (centres[people] + 0.0075 * rng.standard_normal((4000, 128))).astype(np.float32)
    photos = rng.integers(0, 1200, 4000)
    cells = {
        "persons with mistakes": np.where(
            rng.random(4000) < 0.1, rng.integers(0, 91, 4000), people + 1
        ),
        "one cell": np.zeros(4000, np.int64),
        "a cell each": np.arange(4000),
        "all unplaced": np.zeros(4000, np.int64),
    }[partition]
    if partition == "all unplaced":
        # as after a backfill: nobody has a person, and the faces are split among drawn centres
        unplaced = regrouping.Snapshot(
            ids=[uuid.uuid4() for _ in range(4000)],
            photos=photos,
            persons=[None] * 4000,
            assigned=[None] * 4000,
            vectors=vectors,
            names={},
        )
        cells = regrouping.person_cells(unplaced)
        assert len(np.unique(cells)) == 4000 // regrouping.FACES_PER_CELL

    # when each face's neighbours within 0.5 are found
    found = {
        face: (cols, distances)
        for face, cols, distances in regrouping.nearest_neighbours(vectors, photos, 0.5, cells)
    }

    # then they are every face's nearest of other photos, as all pairs say, nearest first
    exact = vectors.astype(np.float64)
    squares = (exact**2).sum(axis=1)
    every = np.sqrt(np.maximum(squares[:, None] + squares[None, :] - 2 * exact @ exact.T, 0))
    assert sorted(found) == list(range(4000))
    for face in range(4000):
        near = np.flatnonzero((every[face] <= 0.5) & (photos != photos[face]))
        truth = near[np.argsort(every[face, near], kind="stable")][: regrouping.NEIGHBOURS]
        cols, distances = found[face]
        assert set(cols.tolist()) == set(truth.tolist()), face
        assert np.all(np.diff(distances) >= 0)
        np.testing.assert_allclose(distances, np.sort(every[face, truth]), atol=1e-5)
