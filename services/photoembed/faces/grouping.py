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

`recluster` forgets every automatic choice and runs the same rules over all faces, oldest first,
giving each new group the person most of its faces had before, so names and ids survive it.
One transaction-scoped advisory lock keeps two workers (or a worker and a user's edit) from
grouping at once.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import delete, exists, select, text, update
from sqlalchemy.orm import Session

from photoembed.logging import get_logger
from photoembed.models import Assignment, Face, Person, Photo
from photoembed.vectors import vector_literal

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


@dataclass
class Regrouping:
    """What a recluster remembers of the automatic choices it forgot."""

    previous: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    persons_made: int = 0


def lock_grouping(session: Session) -> None:
    """Until the transaction ends, nothing else groups faces or edits their persons."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext('photoembed:faces'))"))


def neighbours(session: Session, face: Face, max_distance: float) -> list[Neighbour]:
    """Faces of the same model in other photos within `max_distance` (L2), nearest first."""
    dim = face.dim
    distance = f"(f.vector::vector({dim})) <-> CAST(:q AS vector({dim}))"
    # the filters run after the index scan; iterative scans keep going until enough pass them
    session.execute(text("SET LOCAL hnsw.iterative_scan = 'relaxed_order'"))
    session.execute(text(f"SET LOCAL hnsw.ef_search = {2 * NEIGHBOURS}"))
    rows = session.execute(
        text(
            f"""
            SELECT f.id, f.person_id, f.assigned_by, {distance} AS distance
              FROM faces f
             WHERE f.dim = {int(dim)} AND f.model = :model AND f.photo_id <> :photo
             ORDER BY {distance}
             LIMIT {NEIGHBOURS}
            """  # noqa: S608 - dim is an int from the row; values are bound parameters
        ),
        {"q": vector_literal(face.vector), "model": face.model, "photo": face.photo_id},
    ).all()
    return [
        Neighbour(row.id, row.person_id, row.assigned_by, float(row.distance))
        for row in rows
        if row.distance <= max_distance
    ]


def _give(session: Session, face_ids: list[uuid.UUID], person_id: uuid.UUID) -> None:
    session.execute(
        update(Face)
        .where(Face.id.in_(face_ids), Face.assigned_by.is_(None))
        .values(person_id=person_id, assigned_by=Assignment.AUTO)
        .execution_options(synchronize_session="fetch")
    )


def place(
    session: Session, face: Face, rules: GroupingRules, regrouping: Regrouping | None = None
) -> uuid.UUID | None:
    """Give an unplaced face a person if the rules say so; returns the person (or None).

    In a recluster, a face keeps the person it had while a neighbour within the match distance
    had that person too (the old grouping still holds under the current distance), and waiting
    faces follow only to the person they had before, if any."""
    near = neighbours(session, face, rules.match_distance)
    previous = regrouping.previous if regrouping is not None else {}
    before = previous.get(face.id)

    def waiting(person_id: uuid.UUID | None) -> list[uuid.UUID]:
        return [
            n.id
            for n in near
            if n.person_id is None
            and n.assigned_by is None
            and previous.get(n.id) in (None, person_id)
        ]

    if face.person_id is None and face.assigned_by is None:
        placed = next((n.person_id for n in near if n.person_id is not None), None)
        kept = any(before in (n.person_id, previous.get(n.id)) for n in near)
        if before is not None and kept and session.get(Person, before) is not None:
            _give(session, [face.id], before)
        elif placed is not None:
            _give(session, [face.id], placed)
        elif len(waiting(before)) >= rules.min_faces:
            group = [face.id, *waiting(before)]
            _give(session, group, _person_for_group(session, group, regrouping))
        session.refresh(face)
    if face.person_id is not None:
        _give(session, waiting(face.person_id), face.person_id)
        if face.assigned_by in (Assignment.UPLOAD, Assignment.USER):
            _take_over_unnamed(session, face.person_id, near)
    return face.person_id


def _take_over_unnamed(session: Session, person_id: uuid.UUID, near: list[Neighbour]) -> None:
    """A face placed with a named person on purpose (an upload for them, a user's choice) takes
    over the unnamed persons among its neighbours: their faces and photos join the named person
    and they go. So the grouping ends the same whichever came first, the labelled photo or the
    unlabelled ones. A named person never absorbs another named one."""
    person = session.get(Person, person_id)
    if person is None or person.name is None:
        return
    others = {n.person_id for n in near if n.person_id is not None and n.person_id != person_id}
    unnamed = list(
        session.scalars(select(Person.id).where(Person.id.in_(others), Person.name.is_(None)))
    )
    if not unnamed:
        return
    session.execute(
        update(Face)
        .where(Face.person_id.in_(unnamed))
        .values(person_id=person_id)
        .execution_options(synchronize_session="fetch")
    )
    session.execute(
        update(Photo)
        .where(Photo.person_id.in_(unnamed))
        .values(person_id=person_id)
        .execution_options(synchronize_session="fetch")
    )
    drop_empty_unnamed(session, unnamed)
    log.info("person.took_over", person_id=str(person_id), unnamed=[str(u) for u in unnamed])


def place_chosen(session: Session, faces: list[Face], rules: GroupingRules) -> None:
    """After a user placed `faces` (PATCH /faces, a merge): what the grouping does for a face
    placed on purpose, as `place` does for an upload's face."""
    for face in faces:
        place(session, face, rules)


def _person_for_group(
    session: Session, group: list[uuid.UUID], regrouping: Regrouping | None
) -> uuid.UUID:
    if regrouping is not None:
        before = Counter(regrouping.previous[f] for f in group if f in regrouping.previous)
        for person_id, _count in before.most_common():
            still_empty = not session.execute(
                select(exists().where(Face.person_id == person_id))
            ).scalar_one()
            if still_empty and session.get(Person, person_id) is not None:
                return person_id
    person = Person(id=uuid.uuid4(), name=None)
    session.add(person)
    session.flush()
    if regrouping is not None:
        regrouping.persons_made += 1
    log.info("person.grouped", person_id=str(person.id), faces=len(group))
    return person.id


def group_photo_faces(
    session: Session, photo: Photo, faces: list[Face], rules: GroupingRules
) -> None:
    """The grouping step of a photo's newly stored faces, in the transaction that stored them,
    which holds the grouping lock (`lock_grouping`, taken before the store)."""
    if not faces:
        return
    if photo.person_id is not None:
        largest = max(faces, key=lambda f: f.box_w * f.box_h)
        largest.person_id, largest.assigned_by = photo.person_id, Assignment.UPLOAD
        session.flush()
    for face in faces:
        place(session, face, rules)


def drop_empty_unnamed(session: Session, person_ids: list[uuid.UUID] | None = None) -> int:
    """Delete persons the grouping made (no name) that no face and no photo belongs to any more."""
    empty = (
        delete(Person)
        .where(
            Person.name.is_(None),
            ~exists().where(Face.person_id == Person.id),
            ~exists().where(Photo.person_id == Person.id),
        )
        .execution_options(synchronize_session=False)
    )
    if person_ids is not None:
        empty = empty.where(Person.id.in_(person_ids))
    return int(session.execute(empty).rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ReclusterResult:
    faces: int
    placed: int
    persons_made: int
    persons_dropped: int


def recluster(session: Session, model: str, rules: GroupingRules) -> ReclusterResult:
    lock_grouping(session)
    automatic = session.execute(
        select(Face.id, Face.person_id).where(
            Face.model == model, Face.assigned_by == Assignment.AUTO
        )
    ).all()
    regrouping = Regrouping(previous={row.id: row.person_id for row in automatic if row.person_id})
    session.execute(
        update(Face)
        .where(Face.model == model, Face.assigned_by == Assignment.AUTO)
        .values(person_id=None, assigned_by=None)
    )
    faces = list(
        session.scalars(
            select(Face)
            .where(Face.model == model)
            .order_by(Face.created_at, Face.photo_id, Face.face_index)
        )
    )
    for face in faces:
        place(session, face, rules, regrouping)
    placed = sum(1 for face in faces if face.person_id is not None)
    dropped = drop_empty_unnamed(session)
    log.info(
        "faces.reclustered",
        model=model,
        faces=len(faces),
        placed=placed,
        persons_made=regrouping.persons_made,
        persons_dropped=dropped,
    )
    return ReclusterResult(len(faces), placed, regrouping.persons_made, dropped)
