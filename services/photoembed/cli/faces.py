"""`photoembed faces backfill|recluster`: faces for photos that have none, and the grouping of
faces into persons rebuilt."""

from __future__ import annotations

import argparse
import sys
import uuid

from photoembed.cli.common import configured_settings, log
from photoembed.config import Settings

BATCH = 50


def run_faces_backfill(settings: Settings, args: argparse.Namespace) -> int:
    """READY photos whose face stage never ran (uploaded before it existed, or with faces off)
    or FAILED: in this process, one photo committed at a time (a rerun continues where a stopped
    one ended), or sent to the workers with --enqueue."""
    from photoembed.backfill import Progress
    from photoembed.db import session_scope
    from photoembed.faces import store
    from photoembed.faces.factory import face_model
    from photoembed.models import FacesStatus
    from photoembed.photos import send_for_faces, storage_for
    from photoembed.queue import build_broker
    from photoembed.worker.face_stage import process_faces
    from photoembed.worker.pipeline import TRANSIENT_ERRORS

    with session_scope(settings.database_url) as session:
        total = store.count_photos_without_faces(session)
    log.info("faces.backfill_started", photos=total, enqueue=args.enqueue, dry_run=args.dry_run)
    if args.dry_run:
        print(f"{total} READY photo(s) have no faces yet (never looked at, or FAILED)")
        return 0
    model = None if args.enqueue else face_model(settings)
    broker = build_broker(settings) if args.enqueue else None
    storage = storage_for(settings)
    progress = Progress(total, sys.stderr)
    done = failed = 0
    after: uuid.UUID | None = None
    while True:
        with session_scope(settings.database_url) as session:
            batch = store.photos_without_faces(session, BATCH, after)
            requested = store.request_faces(session, batch)
        if not batch:
            break
        after = batch[-1]
        if broker is not None:
            send_for_faces(settings, broker, requested)
            done += len(requested)
        else:
            assert model is not None
            for photo_id in requested:
                message_id = f"faces-backfill-{uuid.uuid4()}"
                try:
                    outcome = process_faces(photo_id, message_id, settings, model, storage)
                except TRANSIENT_ERRORS as exc:
                    # handed back PENDING: the workers' sweeper sends it again later
                    log.warning("faces.backfill_deferred", photo_id=str(photo_id), error=str(exc))
                    outcome = FacesStatus.FAILED
                if outcome == FacesStatus.FAILED:
                    failed += 1
                else:
                    done += 1
        progress.update(done, failed)
    progress.update(done, failed, final=True)
    log.info("faces.backfill_finished", photos=done, failed=failed, enqueued=args.enqueue)
    return 1 if failed else 0


def run_recluster(settings: Settings, args: argparse.Namespace) -> int:
    """The grouping rebuilt on a snapshot and swapped in at the end (`faces.regrouping`), library
    by library (or only `--library`'s): photos keep being grouped meanwhile, and stopping it
    part-way changes nothing."""
    from photoembed.db import get_sessionmaker, session_scope
    from photoembed.faces.factory import face_model
    from photoembed.faces.regrouping import recluster
    from photoembed.libraries import find_library, libraries
    from photoembed.worker.face_stage import grouping_rules

    with session_scope(settings.database_url) as session:
        if args.library is None:
            chosen = [(library.id, library.name) for library in libraries(session)]
        else:
            library = find_library(session, args.library)
            if library is None:
                print(f"no library {args.library!r} (photoembed libraries list)", file=sys.stderr)
                return 2
            chosen = [(library.id, library.name)]
    model = face_model(settings)
    identity = model.load().identity
    rules = grouping_rules(settings, model)
    for library_id, name in chosen:
        result = recluster(get_sessionmaker(settings.database_url), library_id, identity, rules)
        print(
            f"{name}: {result.faces} face(s): {result.placed} with a person, {result.changed} "
            f"changed, {result.kept_by_user} placed by a user meanwhile and kept, "
            f"{result.placed_again} stored meanwhile and placed again, {result.persons_made} new "
            f"person(s), {result.persons_dropped} empty unnamed person(s) removed "
            f"(seconds: {result.seconds})"
        )
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    faces = commands.add_parser("faces", help="faces: backfill, recluster")
    actions = faces.add_subparsers(dest="faces_command", required=True)
    backfill = actions.add_parser(
        "backfill", help="find the faces of READY photos that have none (resumable)"
    )
    backfill.add_argument("--dry-run", action="store_true", help="only count them")
    backfill.add_argument("--enqueue", action="store_true", help="send the work to the workers")
    backfill.set_defaults(run=lambda args: run_faces_backfill(configured_settings(), args))
    recluster = actions.add_parser(
        "recluster",
        help="rebuild the automatic grouping of faces into persons (user choices stay)",
    )
    recluster.add_argument("--library", help="only this library (name or id); default: every one")
    recluster.set_defaults(run=lambda args: run_recluster(configured_settings(), args))
