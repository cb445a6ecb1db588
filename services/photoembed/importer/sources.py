"""Where an import's files come from: folders (recursive) and S3 prefixes, walked lazily so that
memory stays flat however many files there are.

A file whose extension is not a photo's (sidecars, videos, `.DS_Store`) is never read; globs
(`--include`, `--exclude`, matched against the path below the root, `**` for any folders) narrow
the rest.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol, cast

# What the API accepts (images.ACCEPTED_FORMATS), by the extensions cameras and phones write.
PHOTO_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".png", ".webp", ".gif", ".bmp",
        ".tif", ".tiff", ".heic", ".heif", ".hif", ".avif",
    }
)  # fmt: skip
READ_CHUNK = 1 << 20
SPOOL_BYTES = 4 << 20


@dataclass(frozen=True)
class SourceFile:
    location: str  # what the user sees: a path, or s3://bucket/key
    relative: str  # below the root, with '/' (globs match this)
    folder: str  # the first folder below the root it sits in (Ada/2019/x.jpg: Ada); '' at the root
    size: int
    opener: Opener

    def open(self) -> BinaryIO:
        return self.opener.open(self)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with self.open() as stream:
            while chunk := stream.read(READ_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()


class Opener(Protocol):
    def open(self, file: SourceFile) -> BinaryIO: ...


@dataclass(frozen=True)
class Filters:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def wants(self, relative: str) -> bool:
        path = PurePosixPath(relative)
        if self.include and not any(_matches(path, glob) for glob in self.include):
            return False
        return not any(_matches(path, glob) for glob in self.exclude)


def _matches(path: PurePosixPath, glob: str) -> bool:
    """A glob against the path below the root (`*` crosses folders, as in fnmatch); one without
    '/' also against the file name alone."""
    if "/" not in glob and fnmatch.fnmatch(path.name, glob):
        return True
    return fnmatch.fnmatch(str(path), glob)


def is_photo_name(name: str) -> bool:
    return not name.startswith("._") and PurePosixPath(name).suffix.lower() in PHOTO_EXTENSIONS


@dataclass(frozen=True)
class Walked:
    """One entry of a walk: a photo to consider, or a file skipped by its name (never read)."""

    file: SourceFile | None
    skipped: str | None = None  # its location, when skipped


class LocalOpener:
    def open(self, file: SourceFile) -> BinaryIO:
        return Path(file.location).open("rb")


class S3Opener:
    def __init__(self, client: Any, bucket: str) -> None:
        self.client, self.bucket = client, bucket

    def open(self, file: SourceFile) -> BinaryIO:
        """A seekable copy (in memory up to SPOOL_BYTES, then on disk): an HTTP upload needs the
        length up front, which S3's stream does not give reliably."""
        key = file.location.removeprefix(f"s3://{self.bucket}/")
        copy = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - returned
        self.client.download_fileobj(self.bucket, key, copy)
        copy.seek(0)
        return cast(BinaryIO, copy)


def walk(root: str, filters: Filters, s3_endpoint_url: str | None = None) -> Iterator[Walked]:
    if root.startswith("s3://"):
        yield from _walk_s3(root, filters, s3_endpoint_url)
    else:
        yield from _walk_folder(Path(root), filters)


def _walk_folder(root: Path, filters: Filters) -> Iterator[Walked]:
    """Depth first, names sorted, one folder's entries in memory at a time; a single file is its
    own root."""
    opener = LocalOpener()
    if root.is_file():
        yield from _entry(root, root.name, "", root.stat().st_size, filters, opener)
        return
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        subfolders = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subfolders.append(Path(entry.path))
            elif entry.is_file():
                path = Path(entry.path)
                relative = path.relative_to(root).as_posix()
                yield from _entry(
                    path, relative, _top_folder(relative), entry.stat().st_size, filters, opener
                )
        pending.extend(reversed(subfolders))


def _top_folder(relative: str) -> str:
    head, _, rest = relative.partition("/")
    return head if rest else ""


def _entry(
    path: Path, relative: str, folder: str, size: int, filters: Filters, opener: Opener
) -> Iterator[Walked]:
    if not filters.wants(relative):
        return
    if not is_photo_name(path.name):
        yield Walked(None, skipped=str(path))
        return
    yield Walked(SourceFile(str(path), relative, folder, size, opener))


def s3_client(endpoint_url: str | None) -> Any:
    """boto3's client; credentials and region from its usual environment (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_REGION / AWS_DEFAULT_REGION, AWS_ENDPOINT_URL)."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url)


def _walk_s3(root: str, filters: Filters, endpoint_url: str | None) -> Iterator[Walked]:
    bucket, _, prefix = root.removeprefix("s3://").partition("/")
    client = s3_client(endpoint_url)
    opener = S3Opener(client, bucket)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    base = prefix if prefix.endswith("/") or not prefix else prefix + "/"
    for page in pages:
        for item in page.get("Contents", []):
            key: str = item["Key"]
            if key.endswith("/"):
                continue
            relative = key[len(base) :] if key.startswith(base) else key
            parts = relative.split("/")
            location = f"s3://{bucket}/{key}"
            if not filters.wants(relative):
                continue
            if not is_photo_name(parts[-1]):
                yield Walked(None, skipped=location)
                continue
            yield Walked(
                SourceFile(location, relative, _top_folder(relative), int(item["Size"]), opener)
            )
