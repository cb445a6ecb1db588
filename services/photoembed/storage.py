"""Content-addressed photo storage: a local (or shared) folder, or S3-compatible object storage.

A photo's key is the sha256 of its bytes and its location is derived from the key alone
(`ab/cd/<key>`; thumbnails under `.thumbnails/ab/<key>.jpg`), so no client-chosen name ever reaches
the file system or the bucket, and identical uploads are stored once. `STORAGE_URL` chooses the
backend: `file:///data/photos` or `s3://bucket/prefix` (see `open_storage`). Uploads are always
staged in a local temporary file first, hashed while they stream in, and committed once accepted.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

_KEY = re.compile(r"^[0-9a-f]{64}$")


class TooLargeError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the upload is larger than the limit of {limit} bytes (MAX_UPLOAD_BYTES)")
        self.limit = limit


class PhotoBytesMissing(Exception):
    """The storage has no bytes under this key (or cannot be reached). Transient for a worker:
    another worker, or this one later, may see them; the message names the setting to check."""


class StorageUnavailable(Exception):
    """The storage did not answer (a network error, an outage, a file system error): transient."""


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a storage key: {key!r}")
    return key


def object_name(key: str) -> str:
    return f"{key[:2]}/{key[2:4]}/{check_key(key)}"


def thumbnail_name(key: str) -> str:
    return f".thumbnails/{key[:2]}/{check_key(key)}.jpg"


@dataclass(frozen=True)
class StagedFile:
    """An upload written to a local temporary file, hashed, not yet committed."""

    path: Path
    sha256: str
    size: int

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


class StagingWriter:
    """Receives an upload chunk by chunk: hashes it, writes it to a temporary file and stops as
    soon as it passes the limit (the file is removed then, and on any other failure)."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix="upload-")
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()
        self._max_bytes = max_bytes
        self.size = 0

    def write(self, chunk: bytes | memoryview) -> None:
        self.size += len(chunk)
        if self.size > self._max_bytes:
            self.discard()
            raise TooLargeError(self._max_bytes)
        self._digest.update(chunk)
        self._file.write(chunk)

    def finish(self) -> StagedFile:
        self._file.close()
        return StagedFile(path=self.path, sha256=self._digest.hexdigest(), size=self.size)

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class PhotoStorage(Protocol):
    """Where photo bytes and thumbnails live; every worker and API process must reach the same."""

    @property
    def url(self) -> str:
        """The STORAGE_URL this storage was opened from, for messages."""
        ...

    def staging(self, max_bytes: int) -> StagingWriter: ...

    def commit(self, staged: StagedFile) -> str:
        """Store a staged upload under its content address and return the key."""
        ...

    def discard(self, staged: StagedFile) -> None: ...

    def read(self, key: str) -> bytes:
        """The photo's bytes; PhotoBytesMissing when they are not there."""
        ...

    def remove(self, key: str) -> None:
        """Delete a photo and its thumbnail (callers check that no other row uses it)."""
        ...

    def read_thumbnail(self, key: str) -> bytes | None: ...

    def write_thumbnail(self, key: str, data: bytes) -> None: ...

    def check(self) -> None:
        """Raise when the storage cannot be used (for /readyz)."""
        ...


def _missing_message(key: str, url: str) -> str:
    return (
        f"the photo's bytes ({key}) are not in the storage at STORAGE_URL={url}. Check that every "
        f"API and worker process uses the same STORAGE_URL and can reach it (a worker on another "
        f"machine needs shared storage: a shared folder or S3)"
    )


class LocalStorage:
    """A folder on this machine or a shared file system (NFS, SMB, a mounted volume)."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self._staging = self.root / ".staging"
        self._staging.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def path_for(self, key: str) -> Path:
        return self.root / object_name(key)

    def staging(self, max_bytes: int) -> StagingWriter:
        return StagingWriter(self._staging, max_bytes)

    def commit(self, staged: StagedFile) -> str:
        target = self.path_for(staged.sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged.path.replace(target)
        return staged.sha256

    def discard(self, staged: StagedFile) -> None:
        staged.path.unlink(missing_ok=True)

    def read(self, key: str) -> bytes:
        try:
            return self.path_for(key).read_bytes()
        except FileNotFoundError:
            raise PhotoBytesMissing(_missing_message(key, self.url)) from None
        except OSError as exc:  # a shared file system that went away (ESTALE, EIO, ...)
            raise StorageUnavailable(f"reading {self.url}: {exc}") from None

    def remove(self, key: str) -> None:
        self.path_for(key).unlink(missing_ok=True)
        (self.root / thumbnail_name(key)).unlink(missing_ok=True)

    def read_thumbnail(self, key: str) -> bytes | None:
        path = self.root / thumbnail_name(key)
        return path.read_bytes() if path.is_file() else None

    def write_thumbnail(self, key: str, data: bytes) -> None:
        path = self.root / thumbnail_name(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_bytes(data)
        partial.replace(path)

    def check(self) -> None:
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            raise PermissionError(f"{self.root} is not readable and writable")


class S3Storage:
    """An S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...) through boto3, under a prefix."""

    def __init__(self, bucket: str, prefix: str, client: Any, staging_dir: Path) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client
        self._staging = staging_dir

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _name(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def staging(self, max_bytes: int) -> StagingWriter:
        return StagingWriter(self._staging, max_bytes)

    def _exists(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def commit(self, staged: StagedFile) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        name = self._name(object_name(staged.sha256))
        try:
            if not self._exists(name):  # identical bytes are stored once
                self._client.upload_file(str(staged.path), self.bucket, name)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"writing to {self.url}: {exc}") from None
        finally:
            staged.path.unlink(missing_ok=True)
        return staged.sha256

    def discard(self, staged: StagedFile) -> None:
        staged.path.unlink(missing_ok=True)

    def _get(self, name: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body: bytes = self._client.get_object(Bucket=self.bucket, Key=name)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageUnavailable(f"reading {self.url}: {exc}") from None
        except BotoCoreError as exc:  # connection refused, timeouts
            raise StorageUnavailable(f"reading {self.url}: {exc}") from None
        return body

    def read(self, key: str) -> bytes:
        data = self._get(self._name(object_name(key)))
        if data is None:
            raise PhotoBytesMissing(_missing_message(key, self.url))
        return data

    def remove(self, key: str) -> None:
        for name in (object_name(key), thumbnail_name(key)):
            self._client.delete_object(Bucket=self.bucket, Key=self._name(name))

    def read_thumbnail(self, key: str) -> bytes | None:
        return self._get(self._name(thumbnail_name(key)))

    def write_thumbnail(self, key: str, data: bytes) -> None:
        self._client.put_object(
            Bucket=self.bucket,
            Key=self._name(thumbnail_name(key)),
            Body=data,
            ContentType="image/jpeg",
        )

    def check(self) -> None:
        self._client.head_bucket(Bucket=self.bucket)


def s3_client(
    endpoint_url: str | None, region: str | None, key_id: str | None, secret: str | None
) -> Any:
    import boto3
    from botocore.config import Config

    # Empty credentials fall back to boto3's own chain (AWS_* variables, profiles, instance roles).
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region or None,
        aws_access_key_id=key_id or None,
        aws_secret_access_key=secret or None,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5),
    )


def open_storage(
    url: str,
    *,
    staging_dir: Path | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    key_id: str | None = None,
    secret: str | None = None,
) -> PhotoStorage:
    """`file:///path` (or a plain path) or `s3://bucket[/prefix]`."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return LocalStorage(Path(parsed.path if parsed.scheme else url))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"STORAGE_URL={url} names no bucket: use s3://bucket/prefix")
        staging = staging_dir or Path(tempfile.gettempdir()) / "photoembed-staging"
        client = s3_client(endpoint_url, region, key_id, secret)
        return S3Storage(parsed.netloc, parsed.path, client, staging)
    raise ValueError(f"STORAGE_URL={url}: use file:///path/to/folder or s3://bucket/prefix")
