"""Whose a face is, decided as each photo's faces are stored (no nightly job).

* A photo uploaded for a person labels its largest face as that person (`upload`).
* A face within the match distance of any face that has a person joins the nearest one's person.
* A face that matches nobody waits; once it has at least FACE_MIN_FACES waiting neighbours within
  the match distance (a core face, as in Immich's DBSCAN-like grouping) it and those neighbours
  become a new unnamed person. Whenever a face gets a person, the waiting faces within the match
  distance of it follow (they are re-tried as more faces arrive).
* A face a user placed (`assigned_by = 'user'`, with a person or with none) is never moved, and
  faces of the same photo never match each other (one person appears once in a photo).
* A face placed with a named person on purpose (an upload for them, a user's edit or merge) takes
  over the unnamed persons among its neighbours, so the persons come out the same whichever
  arrived first, the labelled photo or the unlabelled ones. Named persons never merge by
  themselves.

Everything happens within one library: a face's neighbours are the library's faces, its persons
the library's persons (the database's composite keys refuse anything else). The same face in two
libraries never joins one person.

`regrouping.recluster` forgets every automatic choice and runs the same rules over a library's
faces, oldest first, on a snapshot in memory, giving each new group the person most of its faces
had before, so names and ids survive it. One transaction-scoped advisory lock per library keeps
two workers (or a worker and a user's edit) from grouping its faces at once; libraries group at
the same time.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import delete, exists, select, text, update
from sqlalchemy.orm import Session

from photoembed.logging import get_logger
from photoembed.models import Assignment, Face, Person, Photo
from photoembed.vectors import plan_for_this_library, ranks_exactly, vector_literal

log = get_logger(__name__)

NEIGHBOURS = 64  # nearest faces looked at for each face


@dataclass(frozen=True)
class GroupingRules:
    match_distance: float
    min_faces: int


@dataclass(frozen=True)
class Neighbour:
    id: uuid.UUID
    person_id: uuid.UUID | None
    assigned_by: str | None
    distance: float


GROUPING_LOCK = "SELECT pg_advisory_xact_lock(hashtext('photoembed:faces'), hashtext(:library))"


def lock_grouping(session: Session, library_id: uuid.UUID) -> None:
    """Until the transaction ends, nothing else groups the library's faces or edits its persons."""
    session.execute(text(GROUPING_LOCK), {"library": str(library_id)})


class Grouping(Protocol):
    """Where the rules read and write who a face is: the database (`DatabaseGrouping`, as photos
    arrive) or a snapshot in memory (`regrouping.SnapshotGrouping`, a recluster)."""

    def face(self, face_id: uuid.UUID) -> tuple[uuid.UUID | None, str | None]:
        """The face's person and who placed it."""
        ...

    def neighbours(self, face_id: uuid.UUID, max_distance: float) -> list[Neighbour]:
        """Faces of the same model in other photos within `max_distance` (L2), nearest first, at
        most NEIGHBOURS of them."""
        ...

    def give(self, face_ids: list[uuid.UUID], person_id: uuid.UUID) -> None:
        """The faces among `face_ids` that nobody placed go to `person_id` (`auto`)."""
        ...

    def exists(self, person_id: uuid.UUID) -> bool: ...

    def has_faces(self, person_id: uuid.UUID) -> bool: ...

    def new_person(self) -> uuid.UUID: ...

    def is_named(self, person_id: uuid.UUID) -> bool: ...

    def unnamed(self, person_ids: set[uuid.UUID]) -> list[uuid.UUID]:
        """Those of `person_ids` that exist and have no name."""
        ...

    def take_over(self, person_id: uuid.UUID, unnamed: list[uuid.UUID]) -> None:
        """Every face and photo of the `unnamed` persons goes to `person_id`; they go."""
        ...


def place(
    grouping: Grouping,
    face_id: uuid.UUID,
    rules: GroupingRules,
    previous: Mapping[uuid.UUID, uuid.UUID] | None = None,
) -> uuid.UUID | None:
    """Give an unplaced face a person if the rules say so; returns the person (or None).

    In a recluster (`previous`: the automatic choices it forgot), a face keeps the person it had
    while a neighbour within the match distance had that person too (the old grouping still holds
    under the current distance), and waiting faces follow only to the person they had before."""
    previous = previous or {}
    near = grouping.neighbours(face_id, rules.match_distance)
    before = previous.get(face_id)

    def waiting(person_id: uuid.UUID | None) -> list[uuid.UUID]:
        return [
            n.id
            for n in near
            if n.person_id is None
            and n.assigned_by is None
            and previous.get(n.id) in (None, person_id)
        ]

    person_id, assigned_by = grouping.face(face_id)
    if person_id is None and assigned_by is None:
        placed = next((n.person_id for n in near if n.person_id is not None), None)
        kept = any(before in (n.person_id, previous.get(n.id)) for n in near)
        if before is not None and kept and grouping.exists(before):
            grouping.give([face_id], before)
        elif placed is not None:
            grouping.give([face_id], placed)
        elif len(waiting(before)) >= rules.min_faces:
            group = [face_id, *waiting(before)]
            grouping.give(group, _person_for_group(grouping, group, previous))
        person_id, assigned_by = grouping.face(face_id)
    if person_id is not None:
        grouping.give(waiting(person_id), person_id)
        if assigned_by in (Assignment.UPLOAD, Assignment.USER):
            _take_over_unnamed(grouping, person_id, near)
    return person_id


def _take_over_unnamed(grouping: Grouping, person_id: uuid.UUID, near: list[Neighbour]) -> None:
    """A face placed with a named person on purpose (an upload for them, a user's choice) takes
    over the unnamed persons among its neighbours: their faces and photos join the named person
    and they go. So the grouping ends the same whichever came first, the labelled photo or the
    unlabelled ones. A named person never absorbs another named one."""
    if not grouping.is_named(person_id):
        return
    others = {n.person_id for n in near if n.person_id is not None and n.person_id != person_id}
    unnamed = grouping.unnamed(others)
    if unnamed:
        grouping.take_over(person_id, unnamed)
        log.info("person.took_over", person_id=str(person_id), unnamed=[str(u) for u in unnamed])


def _person_for_group(
    grouping: Grouping, group: list[uuid.UUID], previous: Mapping[uuid.UUID, uuid.UUID]
) -> uuid.UUID:
    """A new group's person: the one most of its faces had before a recluster, if that person
    still exists and has no face yet, else a new unnamed one."""
    before = Counter(previous[f] for f in group if f in previous)
    for person_id, _count in before.most_common():
        if not grouping.has_faces(person_id) and grouping.exists(person_id):
            return person_id
    return grouping.new_person()


class DatabaseGrouping:
    """The rules' state in the database, in the caller's transaction (which holds the library's
    grouping lock, `lock_grouping`)."""

    def __init__(self, session: Session, library_id: uuid.UUID) -> None:
        self.session = session
        self.library_id = library_id

    def _face(self, face_id: uuid.UUID) -> Face:
        face = self.session.get(Face, face_id)
        assert face is not None, face_id
        return face

    def face(self, face_id: uuid.UUID) -> tuple[uuid.UUID | None, str | None]:
        face = self._face(face_id)
        return face.person_id, face.assigned_by

    def neighbours(self, face_id: uuid.UUID, max_distance: float) -> list[Neighbour]:
        face = self._face(face_id)
        dim = int(face.dim)
        if ranks_exactly(self.session, "faces", self.library_id, face.model, dim):
            distance = "f.vector <-> CAST(:q AS vector)"  # no index serves it: every face ranked
        else:
            distance = f"(f.vector::vector({dim})) <-> CAST(:q AS vector({dim}))"
            plan_for_this_library(self.session)
            # the filters run after the index scan; iterative scans keep going until enough pass
            self.session.execute(text("SET LOCAL hnsw.iterative_scan = 'relaxed_order'"))
            self.session.execute(text(f"SET LOCAL hnsw.ef_search = {2 * NEIGHBOURS}"))
        rows = self.session.execute(
            text(
                f"""
                SELECT f.id, f.person_id, f.assigned_by, {distance} AS distance
                  FROM faces f
                 WHERE f.library_id = :library AND f.dim = {dim} AND f.model = :model
                   AND f.photo_id <> :photo
                 ORDER BY {distance}
                 LIMIT {NEIGHBOURS}
                """  # noqa: S608 - dim is an int from the row; values are bound parameters
            ),
            {
                "q": vector_literal(face.vector),
                "library": self.library_id,
                "model": face.model,
                "photo": face.photo_id,
            },
        ).all()
        return [
            Neighbour(row.id, row.person_id, row.assigned_by, float(row.distance))
            for row in rows
            if row.distance <= max_distance
        ]

    def give(self, face_ids: list[uuid.UUID], person_id: uuid.UUID) -> None:
        self.session.execute(
            update(Face)
            .where(
                Face.id.in_(face_ids),
                Face.library_id == self.library_id,
                Face.assigned_by.is_(None),
            )
            .values(person_id=person_id, assigned_by=Assignment.AUTO)
            .execution_options(synchronize_session="fetch")
        )

    def _person(self, person_id: uuid.UUID) -> Person | None:
        person = self.session.get(Person, person_id)
        return person if person is not None and person.library_id == self.library_id else None

    def exists(self, person_id: uuid.UUID) -> bool:
        return self._person(person_id) is not None

    def has_faces(self, person_id: uuid.UUID) -> bool:
        found = self.session.execute(select(exists().where(Face.person_id == person_id)))
        return bool(found.scalar_one())

    def new_person(self) -> uuid.UUID:
        person = Person(id=uuid.uuid4(), library_id=self.library_id, name=None)
        self.session.add(person)
        self.session.flush()
        log.info("person.grouped", person_id=str(person.id))
        return person.id

    def is_named(self, person_id: uuid.UUID) -> bool:
        person = self._person(person_id)
        return person is not None and person.name is not None

    def unnamed(self, person_ids: set[uuid.UUID]) -> list[uuid.UUID]:
        return list(
            self.session.scalars(
                select(Person.id).where(
                    Person.id.in_(person_ids),
                    Person.library_id == self.library_id,
                    Person.name.is_(None),
                )
            )
        )

    def take_over(self, person_id: uuid.UUID, unnamed: list[uuid.UUID]) -> None:
        for table in (Face, Photo):
            self.session.execute(
                update(table)
                .where(table.person_id.in_(unnamed), table.library_id == self.library_id)
                .values(person_id=person_id)
                .execution_options(synchronize_session="fetch")
            )
        drop_empty_unnamed(self.session, self.library_id, unnamed)


def place_chosen(
    session: Session, library_id: uuid.UUID, faces: list[Face], rules: GroupingRules
) -> None:
    """After a user placed `faces` of the library (PATCH /faces, a merge): what the grouping does
    for a face placed on purpose, as `place` does for an upload's face."""
    grouping = DatabaseGrouping(session, library_id)
    for face in faces:
        place(grouping, face.id, rules)


def group_photo_faces(
    session: Session, photo: Photo, faces: list[Face], rules: GroupingRules
) -> None:
    """The grouping step of a photo's newly stored faces, among its library's, in the transaction
    that stored them, which holds the library's grouping lock (`lock_grouping`, taken before the
    store)."""
    if not faces:
        return
    if photo.person_id is not None:
        largest = max(faces, key=lambda f: f.box_w * f.box_h)
        largest.person_id, largest.assigned_by = photo.person_id, Assignment.UPLOAD
        session.flush()
    grouping = DatabaseGrouping(session, photo.library_id)
    for face in faces:
        place(grouping, face.id, rules)


def drop_empty_unnamed(
    session: Session, library_id: uuid.UUID, person_ids: list[uuid.UUID] | None = None
) -> int:
    """Delete the library's persons the grouping made (no name) that no face and no photo belongs
    to any more (of `person_ids`, or all)."""
    empty = (
        delete(Person)
        .where(
            Person.library_id == library_id,
            Person.name.is_(None),
            ~exists().where(Face.person_id == Person.id),
            ~exists().where(Photo.person_id == Person.id),
        )
        .execution_options(synchronize_session=False)
    )
    if person_ids is not None:
        empty = empty.where(Person.id.in_(person_ids))
    return int(session.execute(empty).rowcount)  # type: ignore[attr-defined]
