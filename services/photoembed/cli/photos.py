"""Commands on stored photos: `photoembed retry`, `photoembed sweep`, `photoembed backfill`."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta

from photoembed.cli.common import configured_settings, log
from photoembed.config import Settings


def run_sweep(settings: Settings) -> int:
    from photoembed.queue import build_broker
    from photoembed.worker.sweeper import sweep_once

    result = sweep_once(settings, build_broker(settings))
    log.info("sweeper.done", pending=result.resent_pending, expired_lease=result.resent_expired)
    return 0


def parse_since(value: str) -> datetime:
    """An ISO time, or an age such as 30m, 2h, 7d."""
    match = re.fullmatch(r"(\d+)([smhd])", value.strip())
    if match:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return datetime.now(UTC) - timedelta(seconds=seconds)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def run_retry(settings: Settings, args: argparse.Namespace) -> int:
    from photoembed import repository
    from photoembed.db import session_scope
    from photoembed.photos import retry_failed
    from photoembed.queue import build_broker

    with session_scope(settings.database_url) as session:
        ids = repository.failed_photos(
            session, since=args.since, error_contains=args.error_contains, limit=args.limit
        )
    if args.dry_run:
        print(f"{len(ids)} FAILED photo(s) would be retried")
        return 0
    retried = retry_failed(settings, build_broker(settings), ids)
    print(f"{len(retried)} FAILED photo(s) sent again")
    return 0


def run_backfill_command(settings: Settings, args: argparse.Namespace) -> int:
    from photoembed.backfill import enqueue_backfill, run_backfill
    from photoembed.clip.factory import image_embedder
    from photoembed.images import DECODE_VERSION
    from photoembed.sizing import resolve

    settings = resolve(settings)
    embedder = image_embedder(settings)
    if args.enqueue:
        enqueue_backfill(settings, embedder.load().identity, all_statuses=args.all)
        return 0
    result = run_backfill(
        settings,
        embedder,
        batch_size=args.batch_size,
        all_statuses=args.all,
        dry_run=args.dry_run,
    )
    if args.dry_run:
        print(
            f"{result.missing} photo(s) have no vector of {result.model} made by the current "
            f"decode (version {DECODE_VERSION}; older ones are refreshed)"
        )
    return 1 if result.failed else 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    retry = commands.add_parser(
        "retry", help="send FAILED photos round again (after fixing the cause)"
    )
    retry.add_argument("--failed", action="store_true", required=True, help="FAILED photos")
    retry.add_argument("--since", type=parse_since, help="failed since: ISO time, or 30m, 2h, 7d")
    retry.add_argument("--error-contains", help="only those whose error contains this text")
    retry.add_argument("--limit", type=int, default=100_000)
    retry.add_argument("--dry-run", action="store_true", help="only count them")
    retry.set_defaults(run=lambda args: run_retry(configured_settings(), args))
    commands.add_parser(
        "sweep", help="re-send lost photos once (the worker also does it periodically)"
    ).set_defaults(run=lambda args: run_sweep(configured_settings()))
    backfill = commands.add_parser(
        "backfill",
        help="give every photo a vector of the active model made by the current decode",
    )
    backfill.add_argument("--dry-run", action="store_true", help="only count what is missing")
    backfill.add_argument("--all", action="store_true", help="every photo, not only READY ones")
    backfill.add_argument("--batch-size", type=int, default=16)
    backfill.add_argument("--enqueue", action="store_true", help="send the work to the workers")
    backfill.set_defaults(run=lambda args: run_backfill_command(configured_settings(), args))
