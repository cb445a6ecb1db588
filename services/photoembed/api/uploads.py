"""Receiving a multipart upload as it streams in: the file part goes straight into the storage's
staging file (hashed on the way, stopped at the size limit), the small form fields are kept.

Starlette's own form parsing spools the file to a temporary file and the route then copies it
again, hopping to a thread for every chunk; streaming it once costs a fraction of that, which is
what lets one API process keep up with many uploading clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request, status
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from photoembed.storage import PhotoStorage, StagedFile, StagingWriter, TooLargeError

MAX_FIELD_BYTES = 4096
FILE_FIELD = "file"


@dataclass
class ReceivedForm:
    fields: dict[str, str] = field(default_factory=dict)
    file: StagedFile | None = None
    filename: str | None = None


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail)


class _FormReader:
    """The callbacks of python-multipart's streaming parser, for one request."""

    def __init__(self, storage: PhotoStorage, max_bytes: int, allowed: set[str]) -> None:
        self.storage = storage
        self.max_bytes = max_bytes
        self.allowed = allowed
        self.form = ReceivedForm()
        self.writer: StagingWriter | None = None
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._value = bytearray()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._value = bytearray()

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise _unprocessable("every multipart part needs Content-Disposition: form-data; name=")
        self._name = name.decode(errors="replace")
        if self._name == FILE_FIELD:
            if self.writer is not None or self.form.file is not None:
                raise _unprocessable(f"send one '{FILE_FIELD}' part, not several")
            filename = options.get(b"filename")
            self.form.filename = filename.decode(errors="replace") if filename else None
            self.writer = self.storage.staging(self.max_bytes)
        elif self._name not in self.allowed:
            raise _unprocessable(
                f"unknown form field {self._name!r}; expected {', '.join(sorted(self.allowed))}"
            )

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._name == FILE_FIELD and self.writer is not None:
            self.writer.write(memoryview(data)[start:end])
            return
        self._value += data[start:end]
        if len(self._value) > MAX_FIELD_BYTES:
            raise _unprocessable(
                f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes"
            )

    def _part_end(self) -> None:
        if self._name == FILE_FIELD and self.writer is not None:
            self.form.file = self.writer.finish()
            self.writer = None
        elif self._name is not None:
            self.form.fields[self._name] = self._value.decode(errors="replace")

    def abandon(self) -> None:
        if self.writer is not None:
            self.writer.discard()
        if self.form.file is not None:
            self.storage.discard(self.form.file)


async def receive_form(
    request: Request, storage: PhotoStorage, max_bytes: int, allowed: set[str]
) -> ReceivedForm:
    """Parse a multipart/form-data body: at most one `file` part (staged) and the `allowed` small
    fields. The caller owns the staged file afterwards (commit or discard it)."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail="send the photo as multipart/form-data with a part named 'file'",
        )
    reader = _FormReader(storage, max_bytes, allowed)
    parser = MultipartParser(boundary, reader.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
        if reader.writer is not None:  # the body ended inside the file part
            raise _unprocessable("the multipart body ends in the middle of the file")
    except TooLargeError as exc:
        reader.abandon()
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=str(exc)) from None
    except MultipartParseError as exc:
        reader.abandon()
        raise _unprocessable(f"malformed multipart body: {exc}") from None
    except BaseException:
        reader.abandon()
        raise
    return reader.form
