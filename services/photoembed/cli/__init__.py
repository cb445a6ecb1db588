"""`photoembed`: the command line of the product (see README for each command). Each module here
registers its commands; `main` runs the one asked for and refuses anything else."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from photoembed.cli import database, dev, faces, importer, libraries, model, photos, serve
from photoembed.cli.common import log
from photoembed.clip.errors import ModelLoadError
from photoembed.config import settings_table

Command = Callable[[argparse.Namespace], int]


def _print_settings(args: argparse.Namespace) -> int:
    print(settings_table())
    return 0


def _print_secret_key(args: argparse.Namespace) -> int:
    from photoembed.webhooks.secrets import new_encryption_key

    print(new_encryption_key())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="photoembed", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (dev, serve, database, photos, faces, model, importer, libraries):
        module.register(commands)
    commands.add_parser(
        "settings", help="print the settings table (name, type, default)"
    ).set_defaults(run=_print_settings)
    commands.add_parser(
        "secret-key", help="print a new ENCRYPTION_KEY (what webhook secrets are kept with)"
    ).set_defaults(run=_print_secret_key)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Command | None = getattr(args, "run", None)
    if run is None:
        parser.error(f"no such command: {' '.join(argv or sys.argv[1:])}")
    try:
        return run(args)
    except ModelLoadError as exc:
        log.error("model.unavailable", error=str(exc))
        return 1
