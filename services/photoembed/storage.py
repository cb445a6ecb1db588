"""Content-addressed photo storage on a local folder.

A photo's key is the sha256 of its bytes; its path is derived from the key alone, so no client-chosen
name ever reaches the file system.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

_KEY = re.compile(r"^[0-9a-f]{64}$")


class TooLargeError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"file is larger than the limit of {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class StagedFile:
    """An upload written to a temporary file inside the storage folder, not yet committed."""

    path: Path
    sha256: str
    size: int


class PhotoStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._staging = self.root / ".staging"
        self._staging.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a storage key: {key!r}")
        return self.root / key[:2] / key[2:4] / key

    async def stage(self, chunks: AsyncIterator[bytes], max_bytes: int) -> StagedFile:
        """Stream chunks to a temporary file, hashing as we go; stop as soon as the limit is passed."""
        digest = hashlib.sha256()
        size = 0
        fd, name = tempfile.mkstemp(dir=self._staging)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLargeError(max_bytes)
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return StagedFile(path=path, sha256=digest.hexdigest(), size=size)

    def commit(self, staged: StagedFile) -> str:
        """Move a staged file to its content address; identical content is stored once."""
        target = self.path_for(staged.sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged.path.replace(target)
        return staged.sha256

    def discard(self, staged: StagedFile) -> None:
        staged.path.unlink(missing_ok=True)

    def thumbnail_path(self, key: str) -> Path:
        self.path_for(key)  # validates the key
        return self.root / ".thumbnails" / key[:2] / f"{key}.jpg"

    def remove(self, key: str) -> None:
        """Delete a stored photo and its thumbnail (callers check that no other row uses it)."""
        self.path_for(key).unlink(missing_ok=True)
        self.thumbnail_path(key).unlink(missing_ok=True)

    def read_path(self, key: str) -> Path:
        path = self.path_for(key)
        if not path.is_file():
            raise FileNotFoundError(f"stored photo {key} is missing from {self.root}")
        return path
