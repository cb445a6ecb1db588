"""Helpers for tests that run the real services. What the benchmark needs too (synthetic photos,
the seeded model cache, child processes) lives in the package and is re-exported here."""

from __future__ import annotations

__all__ = [
    "ServiceProcess",
    "encode",
    "make_photo",
    "random_weights",
    "seed_hf_cache",
    "settings_env",
]

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
from PIL import Image, ImageDraw

from photoembed.clip.weights_files import ensure_random_weights as random_weights
from photoembed.clip.weights_files import seed_hf_cache
from photoembed.devstack import ServiceProcess, settings_env
from photoembed.samples import encode, make_photo


def packages_of(image: Literal["api", "worker"]) -> dict[str, str]:
    """Environment for a child process that has only the packages of that image installed (the
    API's, or the CPU worker's without torch): tests/torchless/sitecustomize.py."""
    torchless = str(Path(__file__).with_name("torchless"))
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [torchless, os.environ.get("PYTHONPATH")])),
        "PHOTOEMBED_TEST_IMAGE": image,
    }


def wait_until(condition: Callable[[], Any], timeout: float = 120.0, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def wait_for_status(
    client: httpx.Client, photo_id: str, statuses: set[str], timeout: float = 180.0
) -> dict[str, Any]:
    def current() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/photos/{photo_id}").json()
        return body if body["status"] in statuses else None

    result: dict[str, Any] = wait_until(current, timeout)
    return result


def wait_for_faces(client: httpx.Client, photo_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """The photo once its face stage has ended (faces_status DONE or FAILED)."""

    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/photos/{photo_id}").json()
        return body if body["faces_status"] in ("DONE", "FAILED") else None

    result: dict[str, Any] = wait_until(finished, timeout=timeout, interval=0.3)
    return result


def embeddings_per_photo(database_url: str, photo_ids: list[str]) -> dict[str, int]:
    import psycopg

    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as conn:
        rows = conn.execute(
            "SELECT photo_id::text, count(*) FROM embeddings WHERE photo_id = ANY(%s::uuid[]) "
            "GROUP BY photo_id",
            (photo_ids,),
        ).fetchall()
    return {photo_id: count for photo_id, count in rows}


def statuses(database_url: str, photo_ids: list[str]) -> dict[str, str]:
    import psycopg

    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as conn:
        rows = conn.execute(
            "SELECT id::text, status FROM photos WHERE id = ANY(%s::uuid[])", (photo_ids,)
        ).fetchall()
    return dict(rows)


def make_person_photo(person: int, variant: int, size: tuple[int, int] = (480, 640)) -> Image.Image:
    """A generated 'person': their colours and build stay, pose, framing and noise vary."""
    look = np.random.default_rng(10_000 + person)
    shot = np.random.default_rng(20_000 + 100 * person + variant)
    width, height = size
    background = tuple(int(v) for v in look.integers(30, 230, size=3))
    skin = tuple(int(v) for v in look.uniform(110, 235, size=3))
    shirt = tuple(int(v) for v in look.integers(0, 255, size=3))
    hair = tuple(int(v) for v in look.integers(0, 120, size=3))
    stripes = int(look.integers(2, 7))
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    cx = width // 2 + int(shot.integers(-width // 10, width // 10))
    top = int(height * shot.uniform(0.12, 0.22))
    head = int(width * shot.uniform(0.16, 0.2))
    draw.ellipse([cx - 2 * head, top + 3 * head, cx + 2 * head, height + head], fill=shirt)
    for i in range(stripes):
        y = top + 3 * head + (i + 1) * (height - top - 3 * head) // (stripes + 1)
        draw.line([cx - 2 * head, y, cx + 2 * head, y], fill=background, width=6)
    draw.ellipse([cx - head, top, cx + head, top + int(2.4 * head)], fill=skin)
    draw.pieslice([cx - head, top - 6, cx + head, top + int(1.2 * head)], 180, 360, fill=hair)
    pixels = np.asarray(image, dtype=np.float64) + shot.normal(0, 5, size=(height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def new_library(operator: httpx.Client, name: str, scopes: list[str]) -> tuple[str, str]:
    """A library made with the operator's key, and a key of it with `scopes`: (id, secret)."""
    made = operator.post("/libraries", json={"name": name})
    assert made.status_code == 201, made.text
    library_id = str(made.json()["id"])
    key = operator.post(f"/libraries/{library_id}/keys", json={"scopes": scopes})
    assert key.status_code == 201, key.text
    return library_id, str(key.json()["key"])


def client_with_key(base_url: str, key: str, timeout: float = 60) -> httpx.Client:
    return httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
    )


def png_the_worker_cannot_decode(seed: int) -> bytes:
    """A PNG whose chunks and checksums are sound (the API takes it) but whose pixel data is not
    (the worker fails it): every IDAT byte flipped, its CRC made again."""
    import struct
    import zlib

    data = encode(make_photo(seed, (320, 240)), "PNG")
    out, at = bytearray(data[:8]), 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind == b"IDAT":
            body = bytes(byte ^ 0x5A for byte in body)
        out += struct.pack(">I", len(body)) + kind + body
        out += struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        at += 12 + length
    return bytes(out)
