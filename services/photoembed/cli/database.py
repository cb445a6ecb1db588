"""`photoembed migrate`: the Alembic migrations, shipped inside the package, so an installed
command works from any folder."""

from __future__ import annotations

import argparse
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


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands.add_parser(
        "migrate", help="apply the Alembic migrations to DATABASE_URL"
    ).set_defaults(run=run_migrate)
