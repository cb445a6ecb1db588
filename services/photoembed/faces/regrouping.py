"""`photoembed faces recluster`: a library's grouping rebuilt on a snapshot and swapped in at the
end, so that photos keep being grouped while it runs and a crash part-way changes nothing. Each
library is reclustered on its own, under its own grouping lock: other libraries go on grouping.

1. Snapshot, without the grouping lock: the library's faces of the model (who placed them, their
   person, their vector) and its persons' names, in one repeatable-read transaction.
2. Neighbours, exactly, in memory: each face's NEIGHBOURS nearest faces of other photos within the
   match distance (`nearest_neighbours`): the persons, refined by one k-means round, are cells,
   and a block of one cell's faces is compared only with the faces the triangle inequality leaves
   within reach (one matrix product each); the same answer as every face against all.
3. The rules (`grouping.place`) over the snapshot, oldest face first, every automatic choice
   forgotten (`SnapshotGrouping`): the same code that groups each photo as it arrives. The faces
   left waiting are then placed once more without their old person, as a new photo's would be.
4. The swap, in one short transaction under the grouping lock: the faces whose person changed get
   it, unless someone placed them since the snapshot (a user's choice wins); persons the
   recluster made are created, take-overs move photos too; faces stored since the snapshot (grouped
   under the old grouping meanwhile) are placed again under the new one; empty unnamed persons go.

Nothing is written before step 4, so a crash or Ctrl-C leaves the old grouping as it was.
Memory: the vectors (n x dim floats) and one block of distances (BLOCK_ELEMENTS floats).
"""

from __future__ import annotations

import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

import numpy as np
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from photoembed.backfill import Progress
from photoembed.faces.grouping import (
    NEIGHBOURS,
    DatabaseGrouping,
    GroupingRules,
    Neighbour,
    drop_empty_unnamed,
    lock_grouping,
    place,
)
from photoembed.logging import get_logger
from photoembed.models import Assignment, Face, Person

log = get_logger(__name__)

BLOCK_ELEMENTS = 32 * 2**20  # distances computed at once: 128 MB of float32
QUERY_BLOCK = 1024  # faces of one cell compared at once
BOUND_SLACK = 1e-4  # float32 rounding: a cell is skipped only when it is surely out of reach
FACES_PER_CELL = 50  # unplaced faces split into cells of about this many (a person's worth)


@dataclass(frozen=True)
class Snapshot:
    """The model's faces in grouping order (oldest first) and every person's name."""

    ids: list[uuid.UUID]
    photos: np.ndarray  # int: faces of one photo share a number
    persons: list[uuid.UUID | None]
    assigned: list[str | None]
    vectors: np.ndarray
    names: dict[uuid.UUID, str | None]


def take_snapshot(session: Session, library_id: uuid.UUID, model: str) -> Snapshot:
    session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    rows = session.execute(
        select(Face.id, Face.photo_id, Face.person_id, Face.assigned_by, Face.vector)
        .where(Face.library_id == library_id, Face.model == model)
        .order_by(Face.created_at, Face.photo_id, Face.face_index)
    ).all()
    names: dict[uuid.UUID, str | None] = {
        row.id: row.name
        for row in session.execute(
            select(Person.id, Person.name).where(Person.library_id == library_id)
        )
    }
    photo_numbers: dict[uuid.UUID, int] = {}
    photos = np.array([photo_numbers.setdefault(row.photo_id, len(photo_numbers)) for row in rows])
    vectors = (
        np.stack([np.asarray(row.vector, dtype=np.float32) for row in rows])
        if rows
        else np.zeros((0, 1), np.float32)
    )
    return Snapshot(
        ids=[row.id for row in rows],
        photos=photos,
        persons=[row.person_id for row in rows],
        assigned=[row.assigned_by for row in rows],
        vectors=vectors,
        names=names,
    )


def nearest_neighbours(
    vectors: np.ndarray, photos: np.ndarray, max_distance: float, cells: np.ndarray
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """For each face: the NEIGHBOURS nearest faces of other photos within `max_distance` (L2), as
    (face, neighbours, distances), nearest first; exactly.

    `cells` partitions the faces (any partition gives the same answer; the snapshot's persons make
    a good one). A face p of cell B can be within `max_distance` of face q only if their
    distances to B's centre differ by at most `max_distance` (the triangle inequality), so a block
    of one cell's faces is compared only with the faces of each cell whose distance to its centre
    lies within `max_distance` of the block's: every face against all would take an hour at
    900,000 faces here."""
    squares = np.einsum("ij,ij->i", vectors, vectors)
    if len(vectors) == 0:
        return
    # one k-means round from the given cells: a misplaced face moves to the cell whose centre is
    # nearest, where it no longer widens the bound of the cell it was put in
    _, cell_of = np.unique(cells, return_inverse=True)
    _, cell_of = np.unique(_nearest(vectors, _centres(vectors, cell_of)), return_inverse=True)
    centres = _centres(vectors, cell_of)
    cell_count = len(centres)
    from_centre = np.sqrt(((vectors - centres[cell_of]) ** 2).sum(axis=1))
    # the faces by cell, then by distance from the cell's centre: one sorted key for both (a
    # cell's keys span more than any distance between two vectors)
    span = 2.0 * float(np.sqrt(squares.max())) + max_distance + 1.0
    order = np.lexsort((from_centre, cell_of))
    keys = cell_of[order] * span + from_centre[order].astype(np.float64)
    starts = np.searchsorted(cell_of[order], np.arange(cell_count + 1))
    centre_squares = np.einsum("ij,ij->i", centres, centres)
    block = max(1, min(QUERY_BLOCK, BLOCK_ELEMENTS // len(centres)))
    cell_numbers = np.arange(cell_count)
    for cell in range(cell_count):
        members = order[starts[cell] : starts[cell + 1]]
        for start in range(0, len(members), block):
            faces = members[start : start + block]
            d2 = squares[faces, None] + centre_squares[None, :] - 2.0 * (vectors[faces] @ centres.T)
            to_centre = np.sqrt(np.maximum(d2, 0.0))
            low = cell_numbers * span + np.maximum(
                to_centre.min(axis=0) - max_distance - BOUND_SLACK, 0
            )
            high = cell_numbers * span + to_centre.max(axis=0) + max_distance + BOUND_SLACK
            first = np.searchsorted(keys, low)
            ends = np.searchsorted(keys, high, side="right")
            lengths = ends - first
            reached = np.repeat(first - np.cumsum(lengths) + lengths, lengths)
            candidates = order[reached + np.arange(len(reached))]
            yield from _within(vectors, squares, photos, faces, candidates, max_distance**2)


def _centres(vectors: np.ndarray, cell_of: np.ndarray) -> np.ndarray:
    """The mean of each cell's vectors (cells numbered 0..n-1, none empty)."""
    sums = np.zeros((int(cell_of.max()) + 1, vectors.shape[1]), np.float64)
    np.add.at(sums, cell_of, vectors)
    return (sums / np.bincount(cell_of)[:, None]).astype(np.float32)


def _nearest(vectors: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Each vector's nearest centre, a block of vectors at a time."""
    centre_squares = np.einsum("ij,ij->i", centres, centres)
    block = max(1, BLOCK_ELEMENTS // len(centres))
    nearest = np.empty(len(vectors), np.int64)
    for start in range(0, len(vectors), block):
        scores = centre_squares[None, :] - 2.0 * (vectors[start : start + block] @ centres.T)
        nearest[start : start + block] = np.argmin(scores, axis=1)
    return nearest


def _within(
    vectors: np.ndarray,
    squares: np.ndarray,
    photos: np.ndarray,
    faces: np.ndarray,
    candidates: np.ndarray,
    limit: float,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """`faces` against `candidates` (indexes into `vectors`), a block of faces at a time: each
    face's NEIGHBOURS nearest candidates of other photos within sqrt(`limit`)."""
    others = vectors[candidates].T
    block = max(1, BLOCK_ELEMENTS // max(1, len(candidates)))
    for start in range(0, len(faces), block):
        rows_of = faces[start : start + block]
        d2 = squares[rows_of, None] + squares[None, candidates] - 2.0 * (vectors[rows_of] @ others)
        rows, cols = np.nonzero(d2 <= limit)
        keep = photos[rows_of[rows]] != photos[candidates[cols]]
        rows, cols = rows[keep], cols[keep]
        distances = np.sqrt(np.maximum(d2[rows, cols], 0.0))
        cols = candidates[cols]
        order = np.lexsort((cols, distances, rows))
        rows, cols, distances = rows[order], cols[order], distances[order]
        bounds = np.searchsorted(rows, np.arange(len(rows_of) + 1))
        for offset, face in enumerate(rows_of):
            lo, hi = bounds[offset], min(bounds[offset + 1], bounds[offset] + NEIGHBOURS)
            yield int(face), cols[lo:hi], distances[lo:hi]


def person_cells(snapshot: Snapshot) -> np.ndarray:
    """Each face's current person as a number; the faces of nobody are split among centres drawn
    from them, about FACES_PER_CELL faces each. A library whose faces are all unplaced (after a
    backfill or a model change) would otherwise be one cell, every face compared with all."""
    numbers: dict[uuid.UUID | None, int] = {None: 0}
    cells = np.array([numbers.setdefault(p, len(numbers)) for p in snapshot.persons], np.int64)
    unplaced = np.flatnonzero(cells == 0)
    if len(unplaced) >= 2 * FACES_PER_CELL:
        drawn = np.random.default_rng(0).choice(
            unplaced, len(unplaced) // FACES_PER_CELL, replace=False
        )
        nearest = _nearest(snapshot.vectors[unplaced], snapshot.vectors[drawn])
        cells[unplaced] = len(numbers) + nearest
    return cells


class SnapshotGrouping:
    """The rules' state (`grouping.Grouping`) in memory, over a snapshot with the automatic
    choices forgotten; what changed is read back for the swap."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.index = {face_id: i for i, face_id in enumerate(snapshot.ids)}
        automatic = [by == Assignment.AUTO for by in snapshot.assigned]
        self.previous = {
            face_id: person
            for face_id, person, auto in zip(snapshot.ids, snapshot.persons, automatic, strict=True)
            if auto and person is not None
        }
        self.person = [
            None if auto else p for p, auto in zip(snapshot.persons, automatic, strict=True)
        ]
        self.assigned = [
            None if auto else by for by, auto in zip(snapshot.assigned, automatic, strict=True)
        ]
        self.members: defaultdict[uuid.UUID, set[int]] = defaultdict(set)
        for i, person in enumerate(self.person):
            if person is not None:
                self.members[person].add(i)
        self.names = dict(snapshot.names)
        self.made: set[uuid.UUID] = set()
        self.gone: set[uuid.UUID] = set()
        self.photo_moves: dict[uuid.UUID, uuid.UUID] = {}
        self.near: list[tuple[np.ndarray, np.ndarray]] = [
            (np.zeros(0, np.int64), np.zeros(0, np.float32))
        ] * len(snapshot.ids)

    def face(self, face_id: uuid.UUID) -> tuple[uuid.UUID | None, str | None]:
        i = self.index[face_id]
        return self.person[i], self.assigned[i]

    def neighbours(self, face_id: uuid.UUID, max_distance: float) -> list[Neighbour]:
        cols, distances = self.near[self.index[face_id]]
        ids = self.snapshot.ids
        return [
            Neighbour(ids[j], self.person[j], self.assigned[j], float(d))
            for j, d in zip(cols.tolist(), distances.tolist(), strict=True)
            if d <= max_distance
        ]

    def _move(self, i: int, person_id: uuid.UUID) -> None:
        old = self.person[i]
        if old is not None:
            self.members[old].discard(i)
        self.person[i] = person_id
        self.members[person_id].add(i)

    def give(self, face_ids: list[uuid.UUID], person_id: uuid.UUID) -> None:
        for face_id in face_ids:
            i = self.index[face_id]
            if self.assigned[i] is None:
                self._move(i, person_id)
                self.assigned[i] = Assignment.AUTO

    def exists(self, person_id: uuid.UUID) -> bool:
        return person_id in self.names and person_id not in self.gone

    def has_faces(self, person_id: uuid.UUID) -> bool:
        return bool(self.members.get(person_id))

    def new_person(self) -> uuid.UUID:
        person_id = uuid.uuid4()
        self.names[person_id] = None
        self.made.add(person_id)
        return person_id

    def is_named(self, person_id: uuid.UUID) -> bool:
        return self.exists(person_id) and self.names[person_id] is not None

    def unnamed(self, person_ids: set[uuid.UUID]) -> list[uuid.UUID]:
        return [p for p in person_ids if self.exists(p) and self.names[p] is None]

    def take_over(self, person_id: uuid.UUID, unnamed: list[uuid.UUID]) -> None:
        for other in unnamed:
            for i in list(self.members.get(other, ())):
                self._move(i, person_id)
            self.photo_moves[other] = person_id
            self.gone.add(other)

    def changes(self) -> list[tuple[uuid.UUID, uuid.UUID | None, str | None]]:
        """(face, person, assigned_by) for every face whose placement differs from the snapshot."""
        snapshot = self.snapshot
        return [
            (face_id, self.person[i], self.assigned[i])
            for i, face_id in enumerate(snapshot.ids)
            if (self.person[i], self.assigned[i]) != (snapshot.persons[i], snapshot.assigned[i])
        ]

    def final_photo_moves(self) -> dict[uuid.UUID, uuid.UUID]:
        """Take-overs chained (a took b, then c took a) to the person that holds them now."""
        final = {}
        for source, target in self.photo_moves.items():
            while target in self.photo_moves:
                target = self.photo_moves[target]
            final[source] = target
        return final


@dataclass(frozen=True)
class ReclusterResult:
    faces: int
    placed: int
    changed: int
    kept_by_user: int
    placed_again: int
    persons_made: int
    persons_dropped: int
    seconds: dict[str, float]


def plan(
    snapshot: Snapshot, rules: GroupingRules, stream: TextIO | None = sys.stderr
) -> SnapshotGrouping:
    """Steps 2 and 3: the new grouping of the snapshot, in memory."""
    grouping = SnapshotGrouping(snapshot)
    count = len(snapshot.ids)
    progress = Progress(2 * count, stream or sys.stderr, label="recluster", unit="faces")
    done = 0
    for i, cols, distances in nearest_neighbours(
        snapshot.vectors, snapshot.photos, rules.match_distance, person_cells(snapshot)
    ):
        grouping.near[i] = (cols, distances)
        done += 1
        if stream is not None and done % 1000 == 0:
            progress.update(done, 0)
    for face_id in snapshot.ids:
        place(grouping, face_id, rules, grouping.previous)
        done += 1
        if stream is not None and done % 1000 == 0:
            progress.update(done, 0)
    # A face whose old person no longer holds waits for no one in the first pass (waiting faces
    # follow only the person they had): placed once more as a new photo's face would be.
    for i in range(count):
        if grouping.person[i] is None and grouping.assigned[i] is None:
            place(grouping, snapshot.ids[i], rules)
    if stream is not None:
        progress.update(done, 0, final=True)
    return grouping


def swap(
    session: Session,
    library_id: uuid.UUID,
    model: str,
    grouping: SnapshotGrouping,
    rules: GroupingRules,
) -> tuple[int, int, int]:
    """Step 4, in the caller's transaction: returns (faces changed, faces a user placed since the
    snapshot and so kept, faces stored since the snapshot and placed again)."""
    lock_grouping(session, library_id)
    changes = grouping.changes()
    made = grouping.made - grouping.gone
    connection = session.connection().connection.driver_connection
    assert connection is not None
    session.execute(
        text(
            "CREATE TEMP TABLE regrouped (face_id uuid PRIMARY KEY, old_person uuid, "
            "old_assigned text, person_id uuid, assigned_by text) ON COMMIT DROP"
        )
    )
    index = grouping.index
    snapshot = grouping.snapshot
    with connection.cursor() as cursor:
        with cursor.copy("COPY persons (id, library_id, name, created_at) FROM STDIN") as copy:
            for made_id in made:
                copy.write_row((made_id, library_id, None, "now"))
        with cursor.copy("COPY regrouped FROM STDIN") as copy:
            for face_id, person_id, assigned_by in changes:
                i = index[face_id]
                copy.write_row(
                    (face_id, snapshot.persons[i], snapshot.assigned[i], person_id, assigned_by)
                )
    changed = session.execute(
        text(
            """
            UPDATE faces f SET person_id = r.person_id, assigned_by = r.assigned_by
              FROM regrouped r
             WHERE f.id = r.face_id AND f.library_id = :library
               AND f.person_id IS NOT DISTINCT FROM r.old_person
               AND f.assigned_by IS NOT DISTINCT FROM r.old_assigned
               AND (r.person_id IS NULL OR EXISTS (
                   SELECT 1 FROM persons WHERE id = r.person_id AND library_id = :library))
            """
        ),
        {"library": library_id},
    ).rowcount  # type: ignore[attr-defined]
    for source, target in grouping.final_photo_moves().items():
        session.execute(
            text(
                "UPDATE photos SET person_id = :target "
                "WHERE person_id = :source AND library_id = :library "
                "AND EXISTS (SELECT 1 FROM persons WHERE id = :target AND library_id = :library)"
            ),
            {"source": source, "target": target, "library": library_id},
        )
    # faces stored while the plan was made were grouped under the old grouping: again, under the
    # new one
    stored_since = [
        face_id
        for face_id in session.scalars(
            select(Face.id)
            .where(Face.library_id == library_id, Face.model == model)
            .order_by(Face.created_at, Face.face_index)
        )
        if face_id not in index
    ]
    if stored_since:
        session.execute(
            text(
                "UPDATE faces SET person_id = NULL, assigned_by = NULL "
                "WHERE id = ANY(:ids) AND library_id = :library AND assigned_by = 'auto'"
            ),
            {"ids": stored_since, "library": library_id},
        )
        database = DatabaseGrouping(session, library_id)
        for face_id in stored_since:
            place(database, face_id, rules)
    return int(changed), len(changes) - int(changed), len(stored_since)


def recluster(
    session_factory: sessionmaker[Session],
    library_id: uuid.UUID,
    model: str,
    rules: GroupingRules,
    stream: TextIO | None = sys.stderr,
) -> ReclusterResult:
    """Snapshot, plan and swap the library's grouping (see the module's doc);
    `session_factory()` gives a new session."""
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    with session_factory() as session:
        snapshot = take_snapshot(session, library_id, model)
    seconds["snapshot"] = time.perf_counter() - began
    began = time.perf_counter()
    grouping = plan(snapshot, rules, stream)
    seconds["plan"] = time.perf_counter() - began
    began = time.perf_counter()
    with session_factory() as session, session.begin():
        changed, kept, again = swap(session, library_id, model, grouping, rules)
        dropped = drop_empty_unnamed(session, library_id)
    seconds["swap"] = time.perf_counter() - began
    placed = sum(1 for person in grouping.person if person is not None)
    result = ReclusterResult(
        faces=len(snapshot.ids),
        placed=placed,
        changed=changed,
        kept_by_user=kept,
        placed_again=again,
        persons_made=len(grouping.made - grouping.gone),
        persons_dropped=dropped,
        seconds={name: round(value, 2) for name, value in seconds.items()},
    )
    log.info(
        "faces.reclustered",
        library_id=str(library_id),
        model=model,
        **{k: v for k, v in vars(result).items()},
    )
    return result
