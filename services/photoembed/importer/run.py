"""One import: walk the sources a batch at a time, hash each photo (streaming), ask the API which
hashes it has, upload the rest on `concurrency` threads while the service's backlog allows, and
count everything.

Memory stays flat: files are walked lazily, one batch of names and hashes is held at a time, and
the only set that grows is the failures' list. What makes a re-run cheap is the service itself:
every uploaded photo's hash is known to it, so after Ctrl-C, a crash or a dropped connection the
next run hashes every file again but uploads only what is missing.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from photoembed.importer.client import ApiClient, Refused, Unreachable
from photoembed.importer.sources import Filters, SourceFile, Walked, walk

BATCH = 256
BACKLOG_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class ImportOptions:
    roots: tuple[str, ...]
    filters: Filters = field(default_factory=Filters)
    person: str | None = None
    person_from_folder: bool = False
    concurrency: int = 8
    max_backlog: int = 500  # 0: never wait for the workers
    dry_run: bool = False
    s3_endpoint_url: str | None = None


@dataclass
class Failure:
    file: str
    reason: str
    status: int | None = None


@dataclass
class Summary:
    """What an import did; `files` counts the photos considered (not the skipped names)."""

    files: int = 0
    bytes: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    would_upload: int = 0
    skipped_known: int = 0
    skipped_duplicate: int = 0
    skipped_not_photo: int = 0
    retries: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def done(self) -> int:
        return (
            self.uploaded
            + self.would_upload
            + self.skipped_known
            + self.skipped_duplicate
            + (self.failed)
        )

    def as_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["failed"] = self.failed
        body["photos_per_s"] = round(self.uploaded / self.seconds, 2) if self.seconds else 0.0
        return body


def count(options: ImportOptions) -> tuple[int, int]:
    """Photos and their bytes in the sources, for the progress bar (names only, nothing read)."""
    files = size = 0
    for entry in _walk_all(options):
        if entry.file is not None:
            files += 1
            size += entry.file.size
    return files, size


def _walk_all(options: ImportOptions) -> Iterator[Walked]:
    for root in options.roots:
        yield from walk(root, options.filters, options.s3_endpoint_url)


class RecentHashes:
    """The hashes sent lately, so that two copies of one file in a run go up once, while the
    service does not know the first one yet (bounded: older uploads are known to it by then)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._hashes: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, digest: str) -> bool:
        return digest in self._hashes

    def add(self, digest: str) -> None:
        self._hashes[digest] = None
        if len(self._hashes) > self.capacity:
            self._hashes.popitem(last=False)


class BacklogGate:
    """Holds uploads back while the service's backlog (photos PENDING or PROCESSING) and the
    uploads in flight exceed `max_backlog`, so an import keeps the workers busy without piling
    up an unbounded queue."""

    def __init__(self, client: ApiClient, max_backlog: int, sleep: Callable[[float], None]):
        self.client, self.max_backlog, self.sleep = client, max_backlog, sleep
        self.backlog = 0
        self.checked = 0.0
        self.waited_seconds = 0.0

    def wait(self, in_flight: int) -> None:
        if self.max_backlog <= 0:
            return
        while True:
            if time.monotonic() - self.checked >= BACKLOG_POLL_SECONDS:
                self.backlog = self.client.limits().backlog
                self.checked = time.monotonic()
            if self.backlog + in_flight <= self.max_backlog:
                return
            started = time.monotonic()
            self.sleep(BACKLOG_POLL_SECONDS)
            self.waited_seconds += time.monotonic() - started


class Importer:
    def __init__(
        self,
        options: ImportOptions,
        client: ApiClient,
        on_progress: Callable[[Summary], None] = lambda summary: None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.options = options
        self.client = client
        self.on_progress = on_progress
        self.summary = Summary()
        self.lock = threading.Lock()
        self.gate = BacklogGate(client, options.max_backlog, sleep)
        self.recent = RecentHashes(4 * BATCH + 4 * options.concurrency)
        self.persons: dict[str, str | None] = {}
        self.max_upload_bytes = 0
        self.uploads = threading.Condition(self.lock)
        self.in_flight = 0
        self.stopping = threading.Event()

    def run(self, entries: Iterable[Walked] | None = None) -> Summary:
        """Import every entry (the options' sources by default); raises Unreachable when the API
        cannot be reached at the start."""
        started = time.monotonic()
        self.max_upload_bytes = self.client.limits().max_upload_bytes
        entries = _walk_all(self.options) if entries is None else entries
        threads = self.options.concurrency
        with (
            ThreadPoolExecutor(threads, thread_name_prefix="hash") as hashing,
            ThreadPoolExecutor(threads, thread_name_prefix="upload") as uploading,
        ):
            try:
                for batch in _batches(entries, BATCH):
                    if self.stopping.is_set():
                        break
                    self._batch(list(batch), hashing, uploading)
            except KeyboardInterrupt:
                self.stopping.set()  # the uploads under way finish, the queued ones are dropped
                raise
            finally:
                uploading.shutdown(wait=True, cancel_futures=self.stopping.is_set())
        with self.lock:
            self.summary.retries = self.client.retries
            self.summary.seconds = time.monotonic() - started
        self.on_progress(self.summary)
        return self.summary

    def stop(self) -> None:
        """Finish the uploads under way and start no other (Ctrl-C)."""
        self.stopping.set()

    def _fail(self, file: str, reason: str, status: int | None = None) -> None:
        with self.lock:
            self.summary.failures.append(Failure(file, reason, status))

    def _batch(
        self, batch: list[Walked], hashing: ThreadPoolExecutor, uploading: ThreadPoolExecutor
    ) -> None:
        photos: list[SourceFile] = []
        for entry in batch:
            if entry.file is None:
                with self.lock:
                    self.summary.skipped_not_photo += 1
                continue
            file = entry.file
            with self.lock:
                self.summary.files += 1
                self.summary.bytes += file.size
            if file.size == 0:
                self._fail(file.location, "the file is empty")
            elif file.size > self.max_upload_bytes:
                self._fail(
                    file.location,
                    f"{file.size} bytes, over the service's limit of {self.max_upload_bytes}",
                )
            else:
                photos.append(file)
        digests = list(hashing.map(self._hash, photos))
        readable = [(f, d) for f, d in zip(photos, digests, strict=True) if d is not None]
        # decided before this batch adds its own hashes to `recent` (which drops older ones)
        sent = {d for _, d in readable if d in self.recent}
        known = self.client.known(sorted({d for _, d in readable if d not in sent}))
        for file, digest in readable:
            if digest in known:
                with self.lock:
                    self.summary.skipped_known += 1
            elif digest in sent:
                with self.lock:
                    self.summary.skipped_duplicate += 1
            elif self.options.dry_run:
                sent.add(digest)
                self.recent.add(digest)
                with self.lock:
                    self.summary.would_upload += 1
            else:
                sent.add(digest)
                self.recent.add(digest)
                person_id = self._person_for(file)
                with self.uploads:
                    # two an upload thread: one sending, one ready to go
                    self.uploads.wait_for(lambda: self.in_flight < 2 * self.options.concurrency)
                    self.in_flight += 1
                    in_flight = self.in_flight
                self.gate.wait(in_flight)
                uploading.submit(self._upload, file, digest, person_id)
        self.on_progress(self.summary)

    def _hash(self, file: SourceFile) -> str | None:
        try:
            return file.sha256()
        except OSError as exc:
            self._fail(file.location, f"could not read it: {exc}")
            return None

    def _person_for(self, file: SourceFile) -> str | None:
        name = self.options.person or (file.folder if self.options.person_from_folder else None)
        if not name:
            return None
        if name not in self.persons:
            self.persons[name] = self.client.person_named(name, create=not self.options.dry_run)
        return self.persons[name]

    def _upload(self, file: SourceFile, digest: str, person_id: str | None) -> None:
        try:
            self.client.upload(file, person_id, digest)
        except Refused as exc:
            self._fail(file.location, exc.reason, exc.status)
        except (Unreachable, OSError) as exc:
            self._fail(file.location, str(exc))
        except Exception as exc:  # a source's own error (S3's ClientError, ...): never lost
            self._fail(file.location, f"{type(exc).__name__}: {exc}")
        else:
            with self.lock:
                self.summary.uploaded += 1
                self.summary.uploaded_bytes += file.size
        finally:
            with self.uploads:
                self.in_flight -= 1
                self.uploads.notify()
            self.on_progress(self.summary)


def _batches(entries: Iterable[Walked], size: int) -> Iterator[tuple[Walked, ...]]:
    iterator = iter(entries)
    while batch := tuple(itertools.islice(iterator, size)):
        yield batch
