"""`photoembed libraries create|list` and `photoembed keys create|list|revoke`: what an admin does
over HTTP, straight on the database (DATABASE_URL), for the first key of a deployment and for
operators. A key's secret is printed once, on standard output, never logged."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import datetime
from typing import Any

from photoembed.cli.common import configured_settings, log


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def run_library_create(args: argparse.Namespace) -> int:
    from photoembed.db import session_scope
    from photoembed.libraries import LibraryExists, create_library

    settings = configured_settings()
    with session_scope(settings.database_url) as session:
        try:
            library = create_library(session, args.name)
        except (LibraryExists, ValueError) as exc:
            print(f"photoembed libraries create: {exc}", file=sys.stderr)
            return 1
        body = {"id": str(library.id), "name": library.name, "created_at": _iso(library.created_at)}
    log.info("library.created", created_library_id=body["id"], name=body["name"])
    print(json.dumps(body) if args.json else f"library {body['name']}: {body['id']}")
    return 0


def run_library_list(args: argparse.Namespace) -> int:
    from photoembed.db import session_scope
    from photoembed.libraries import libraries

    settings = configured_settings()
    with session_scope(settings.database_url) as session:
        rows = [
            {"id": str(lib.id), "name": lib.name, "created_at": _iso(lib.created_at)}
            for lib in libraries(session)
        ]
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        print(f"{row['id']}  {row['name']}")
    return 0


def _key_row(key: Any, library_name: str) -> dict[str, Any]:
    return {
        "id": str(key.id),
        "library_id": str(key.library_id),
        "library": library_name,
        "scopes": list(key.scopes),
        "label": key.label,
        "created_at": _iso(key.created_at),
        "expires_at": _iso(key.expires_at),
        "last_used_at": _iso(key.last_used_at),
        "revoked_at": _iso(key.revoked_at),
    }


def run_key_create(args: argparse.Namespace) -> int:
    from photoembed.db import session_scope
    from photoembed.libraries import KeyRefused, create_key, find_library, parse_scopes

    settings = configured_settings()
    with session_scope(settings.database_url) as session:
        library = find_library(session, args.library)
        if library is None:
            print(f"photoembed keys create: no library {args.library!r}", file=sys.stderr)
            return 1
        try:
            made = create_key(
                session,
                library.id,
                parse_scopes(args.scopes.split(",")),
                label=args.label,
                expires_at=args.expires_at,
            )
        except KeyRefused as exc:
            print(f"photoembed keys create: {exc}", file=sys.stderr)
            return 1
        row = _key_row(made.key, library.name)
    log.info("key.created", key_id=row["id"], for_library_id=row["library_id"])
    if args.json:
        print(json.dumps({"key": made.secret, **row}))
    else:
        print(f"key {row['id']} of library {library.name} ({', '.join(row['scopes'])})")
        print("secret (shown this once, only its hash is kept):")
        print(made.secret)
    return 0


def run_key_list(args: argparse.Namespace) -> int:
    from photoembed.db import session_scope
    from photoembed.libraries import find_library, libraries, library_keys

    settings = configured_settings()
    with session_scope(settings.database_url) as session:
        names = {lib.id: lib.name for lib in libraries(session)}
        library_id = None
        if args.library is not None:
            library = find_library(session, args.library)
            if library is None:
                print(f"photoembed keys list: no library {args.library!r}", file=sys.stderr)
                return 1
            library_id = library.id
        rows = [_key_row(key, names[key.library_id]) for key in library_keys(session, library_id)]
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        print(
            f"{row['id']}  {row['library']}  {','.join(row['scopes'])}  "
            f"{row['label'] or '-'}  {state}  last used {row['last_used_at'] or 'never'}"
        )
    return 0


def run_key_revoke(args: argparse.Namespace) -> int:
    from photoembed.db import session_scope
    from photoembed.libraries import revoke_key

    settings = configured_settings()
    with session_scope(settings.database_url) as session:
        key = revoke_key(session, args.key_id)
        if key is None:
            print(f"photoembed keys revoke: no key {args.key_id}", file=sys.stderr)
            return 1
        library_id = str(key.library_id)
    log.info("key.revoked", key_id=str(args.key_id), for_library_id=library_id)
    print(f"key {args.key_id} revoked (every API process refuses it within seconds)")
    return 0


def _time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time zone, for example 2027-01-31T00:00:00Z")
    return parsed


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    libraries = commands.add_parser("libraries", help="libraries: create, list")
    library_actions = libraries.add_subparsers(dest="libraries_command", required=True)
    create = library_actions.add_parser("create", help="make an empty library")
    create.add_argument("name")
    create.add_argument("--json", action="store_true", help="print the library as JSON")
    create.set_defaults(run=run_library_create)
    listing = library_actions.add_parser("list", help="every library")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=run_library_list)

    keys = commands.add_parser("keys", help="API keys of libraries: create, list, revoke")
    key_actions = keys.add_subparsers(dest="keys_command", required=True)
    create_key = key_actions.add_parser(
        "create", help="make a key of a library and print its secret once"
    )
    create_key.add_argument("--library", required=True, help="the library's name or id")
    create_key.add_argument(
        "--scopes", required=True, help="comma-separated: read, upload, manage, admin"
    )
    create_key.add_argument("--label", help="what the key is for (shown in lists)")
    create_key.add_argument("--expires-at", type=_time, help="ISO time with a zone; default never")
    create_key.add_argument("--json", action="store_true", help="print the key as JSON")
    create_key.set_defaults(run=run_key_create)
    list_keys = key_actions.add_parser("list", help="keys (never their secrets)")
    list_keys.add_argument("--library", help="only this library's (name or id)")
    list_keys.add_argument("--json", action="store_true")
    list_keys.set_defaults(run=run_key_list)
    revoke = key_actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", type=uuid.UUID)
    revoke.set_defaults(run=run_key_revoke)
