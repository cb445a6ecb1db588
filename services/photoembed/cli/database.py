"""`photoembed migrate`: the Alembic migrations, shipped inside the package, so an installed
command works from any folder; `photoembed prewarm`: the search indexes read into memory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from photoembed.cli.common import configured_settings, log

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def migrate(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(config, "head")
    log.info("db.migrated", revision="head")


def run_migrate(args: argparse.Namespace) -> int:
    migrate(configured_settings().database_url)
    return 0


def prewarm(database_url: str) -> dict[str, float]:
    """Read every HNSW index into Postgres' shared buffers (pg_prewarm); MB read per index.
    After a restart the first searches would otherwise read the index from disk page by page."""
    from sqlalchemy import text

    from photoembed.db import session_scope

    with session_scope(database_url) as session:
        names = session.scalars(
            text(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                "AND indexdef ILIKE '%USING hnsw%' ORDER BY indexname"
            )
        ).all()
        read = {
            name: session.execute(
                text("SELECT pg_prewarm(CAST(quote_ident(:name) AS regclass))"), {"name": name}
            ).scalar_one()
            * 8192
            / 2**20
            for name in names
        }
    log.info("db.prewarmed", indexes={name: round(mb, 1) for name, mb in read.items()})
    return read


def run_prewarm(args: argparse.Namespace) -> int:
    read = prewarm(configured_settings().database_url)
    print(json.dumps({name: round(mb, 1) for name, mb in read.items()}))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands.add_parser(
        "migrate", help="apply the Alembic migrations to DATABASE_URL"
    ).set_defaults(run=run_migrate)
    commands.add_parser(
        "prewarm",
        help="read the search indexes into Postgres' memory (after a restart); prints MB per index",
    ).set_defaults(run=run_prewarm)
