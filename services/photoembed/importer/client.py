"""The HTTP API as an importer uses it: limits and backlog, which hashes are known, persons by
name, uploads. Transient trouble (a connection reset or refused, a timeout, 429, 502, 503, 504) is
retried with exponential backoff; anything else the API refuses is final and carries its reason.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from photoembed.importer.sources import SourceFile

TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
T = TypeVar("T")


class Refused(Exception):
    """The API answered no for good (4xx other than 429): `reason` is its `detail`."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status, self.reason = status, reason


class Unreachable(Exception):
    """Still transient trouble after every retry."""


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int
    backlog: int


@dataclass(frozen=True)
class Retry:
    attempts: int = 8
    first_delay: float = 0.5
    max_delay: float = 30.0


def _reason(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail) if detail else response.text[:300] or response.reason_phrase


class ApiClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        retry: Retry = Retry(),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(120.0, connect=10.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        self.retry = retry
        self.sleep = sleep
        self.retries = 0

    def close(self) -> None:
        self.http.close()

    def _with_retries(self, send: Callable[[], httpx.Response]) -> httpx.Response:
        delay = self.retry.first_delay
        last = ""
        for attempt in range(1, self.retry.attempts + 1):
            try:
                response = send()
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code not in TRANSIENT_STATUSES:
                    if response.status_code >= 400:
                        raise Refused(response.status_code, _reason(response))
                    return response
                last = f"{response.status_code}: {_reason(response)}"
                wait = response.headers.get("Retry-After", "")
                delay = max(delay, float(wait)) if wait.isdigit() else delay
            if attempt < self.retry.attempts:
                self.retries += 1
                self.sleep(min(delay, self.retry.max_delay))
                delay *= 2
        raise Unreachable(f"gave up after {self.retry.attempts} attempts: {last}")

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        return self._with_retries(lambda: self.http.request(method, url, **kwargs)).json()

    def limits(self) -> Limits:
        body = self._json("GET", "/limits")
        return Limits(int(body["max_upload_bytes"]), int(body.get("backlog", 0)))

    def known(self, hashes: list[str]) -> dict[str, str]:
        """Of these SHA-256 hashes, those the service has, with their photo ids."""
        known: dict[str, str] = {}
        for start in range(0, len(hashes), 1000):
            body = self._json(
                "POST", "/photos/check", json={"hashes": hashes[start : start + 1000]}
            )
            known.update(body["known"])
        return known

    def person_named(self, name: str, create: bool) -> str | None:
        """The id of the person of exactly this name (the oldest if several), made if missing and
        `create`."""
        found = self._json("GET", "/persons", params={"name": name, "limit": 1})["items"]
        if found:
            return str(found[0]["id"])
        if not create:
            return None
        return str(self._json("POST", "/persons", json={"name": name})["id"])

    def upload(self, file: SourceFile, person_id: str | None, digest: str) -> str:
        """The new photo's id. After a broken connection the hash is checked again before the
        file is sent once more: the API may have stored it before the answer was lost."""
        data = {"person_id": person_id} if person_id else {}
        lost_answer = False

        def send() -> httpx.Response:
            nonlocal lost_answer
            if lost_answer and (known := self.known([digest])):
                return httpx.Response(202, json={"id": known[digest]})
            try:
                with file.open() as stream:
                    name = file.relative.rsplit("/", 1)[-1]
                    return self.http.post("/photos", files={"file": (name, stream)}, data=data)
            except httpx.TransportError:
                lost_answer = True
                raise

        photo_id: str = self._with_retries(send).json()["id"]
        uuid.UUID(photo_id)
        return photo_id
