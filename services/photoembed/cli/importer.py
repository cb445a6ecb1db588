"""`photoembed import PATH...`: bring an existing library in through the HTTP API (see
photoembed.importer). Exit 0 when nothing failed, 1 when some file failed, 2 when the API could
not be used at all; 130 after Ctrl-C."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from photoembed.importer.client import ApiClient, Refused, Unreachable
from photoembed.importer.run import Importer, ImportOptions, Summary, count
from photoembed.importer.sources import Filters, Walked, walk

DEFAULT_API = "http://127.0.0.1:8000"
DEFAULT_KEY_FILE = Path(".photoembed/api-key")  # where `make run` keeps its key
PLAIN_EVERY_SECONDS = 5.0
WATCH_SECONDS = 5.0


def api_key(key_file: Path | None) -> str:
    """From --key-file, else PHOTOEMBED_API_KEY, else `make run`'s key file (never a flag: a key
    on the command line would show in `ps`)."""
    if key_file is None and os.environ.get("PHOTOEMBED_API_KEY"):
        return os.environ["PHOTOEMBED_API_KEY"]
    path = key_file or DEFAULT_KEY_FILE
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise SystemExit(
            f"photoembed import: no API key: {exc}. Pass --key-file FILE (one line, a key from "
            f"the service's API_KEYS) or set PHOTOEMBED_API_KEY."
        ) from None


class Progress:
    """A bar on a terminal (files, bytes, skipped, failed, photos/s, ETA); otherwise a plain line
    every few seconds and at the end. Always on stderr, so --json's stdout stays clean."""

    def __init__(self, total_files: int | None, total_bytes: int | None, stream: TextIO) -> None:
        self.total_files, self.total_bytes, self.stream = total_files, total_bytes, stream
        self.started = time.monotonic()
        self.last_line = 0.0
        self.bar: Any = None
        if stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("importing"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeRemainingColumn(),
                console=Console(file=stream),
            )
            self.task = self.bar.add_task("import", total=total_files, detail="")
            self.bar.start()

    def __call__(self, summary: Summary) -> None:
        elapsed = max(1e-6, time.monotonic() - self.started)
        rate = summary.uploaded / elapsed
        detail = (
            f"{summary.uploaded} up ({summary.uploaded_bytes / 1e6:.0f} MB), "
            f"{summary.skipped_known + summary.skipped_duplicate} skipped, "
            f"{summary.failed} failed, {rate:.1f} photos/s"
        )
        if self.bar is not None:
            self.bar.update(self.task, completed=summary.done, detail=detail)
            return
        now = time.monotonic()
        if now - self.last_line < PLAIN_EVERY_SECONDS:
            return
        self.last_line = now
        self.line(summary, detail, elapsed)

    def line(self, summary: Summary, detail: str, elapsed: float) -> None:
        of = f"/{self.total_files}" if self.total_files is not None else ""
        eta = ""
        if self.total_files and summary.done:
            left = elapsed * (self.total_files - summary.done) / summary.done
            eta = f", ETA {left:.0f}s"
        print(f"import: {summary.done}{of} files, {detail}{eta}", file=self.stream, flush=True)

    def close(self, summary: Summary) -> None:
        if self.bar is not None:
            self(summary)
            self.bar.stop()
        else:
            self.last_line = 0.0
            self(summary)


def _unseen(entries: Iterator[Walked], seen: set[tuple[str, int]]) -> Iterator[Walked]:
    """For --watch: what the earlier passes did not have (by location and size)."""
    for entry in entries:
        key = (entry.file.location, entry.file.size) if entry.file else (entry.skipped or "", -1)
        if key not in seen:
            seen.add(key)
            yield entry


def run_import(args: argparse.Namespace) -> int:
    options = ImportOptions(
        roots=tuple(args.paths),
        filters=Filters(tuple(args.include or ()), tuple(args.exclude or ())),
        person=args.person,
        person_from_folder=args.person_from_folder,
        concurrency=args.concurrency,
        max_backlog=args.max_backlog,
        dry_run=args.dry_run,
        s3_endpoint_url=args.s3_endpoint_url,
    )
    for root in options.roots:
        if not root.startswith("s3://") and not Path(root).exists():
            print(f"photoembed import: {root}: no such file or folder", file=sys.stderr)
            return 2
    client = ApiClient(args.api, api_key(args.key_file))
    total_files, total_bytes = (None, None) if args.watch else count(options)
    progress = Progress(total_files, total_bytes, sys.stderr)
    importer = Importer(options, client, on_progress=progress)
    seen: set[tuple[str, int]] = set()
    code = 0
    try:
        while True:
            if args.watch:
                entries = (
                    entry
                    for root in options.roots
                    for entry in walk(root, options.filters, options.s3_endpoint_url)
                )
                summary = importer.run(_unseen(entries, seen))
            else:
                summary = importer.run()
            if not args.watch:
                break
            time.sleep(args.watch_interval)
    except KeyboardInterrupt:
        importer.stop()
        code = 130
    except (Unreachable, Refused) as exc:
        print(f"photoembed import: the API at {args.api} cannot be used: {exc}", file=sys.stderr)
        code = 2
    finally:
        client.close()
    summary = importer.summary
    progress.close(summary)
    if args.json:
        json.dump(summary.as_dict(), sys.stdout, indent=2)
        print()
    elif summary.failures:
        for failure in summary.failures:
            print(f"failed: {failure.file}: {failure.reason}", file=sys.stderr)
    return code or (1 if summary.failures else 0)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "import",
        help="upload an existing library (folders or s3://bucket/prefix) through the API, "
        "skipping what it already has",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a folder, a file or s3://...")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--person", metavar="NAME", help="attach every photo to this person")
    who.add_argument(
        "--person-from-folder",
        action="store_true",
        help="attach each photo to the person named by the folder right below PATH it is in "
        "(Ada/2019/x.jpg: Ada; made if missing)",
    )
    parser.add_argument("--include", action="append", metavar="GLOB", help="only these (repeat)")
    parser.add_argument("--exclude", action="append", metavar="GLOB", help="not these (repeat)")
    parser.add_argument("--concurrency", type=int, default=8, help="uploads at once (default 8)")
    parser.add_argument(
        "--max-backlog",
        type=int,
        default=500,
        help="wait while this many photos wait for the workers (default 500; 0: never wait)",
    )
    parser.add_argument("--dry-run", action="store_true", help="hash and check, upload nothing")
    parser.add_argument("--json", action="store_true", help="a JSON summary on stdout")
    parser.add_argument("--watch", action="store_true", help="keep importing new files")
    parser.add_argument(
        "--watch-interval", type=float, default=WATCH_SECONDS, help=argparse.SUPPRESS
    )
    parser.add_argument("--api", default=DEFAULT_API, help=f"the API's URL (default {DEFAULT_API})")
    parser.add_argument(
        "--key-file",
        type=Path,
        help=f"a file holding the API key (default: PHOTOEMBED_API_KEY, else {DEFAULT_KEY_FILE})",
    )
    parser.add_argument(
        "--s3-endpoint-url", help="an S3-compatible endpoint (default: AWS_ENDPOINT_URL or AWS)"
    )
    parser.set_defaults(run=run_import)
