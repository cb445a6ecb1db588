"""Helpers for tests that run the real services: photos, the seeded model cache, child processes."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image, ImageDraw

from photoembed.clip.backends.openclip import WeightsMeta, hub_files, read_sidecar
from photoembed.clip.weights_files import write_random_weights
from photoembed.config import Settings

HF_REVISION = "0" * 40


def make_photo(seed: int = 0, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A synthetic 'person photo': a lit background, a head and shoulders, texture and noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    _y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = rng.uniform(60, 200, size=3)
    background = base[None, None, :] * (0.6 + 0.4 * (x / width))[..., None]
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    skin = tuple(int(v) for v in rng.uniform(120, 230, size=3))
    shirt = tuple(int(v) for v in rng.uniform(0, 255, size=3))
    cx = width // 2 + int(rng.integers(-width // 8, width // 8))
    draw.ellipse([cx - width // 3, height * 0.62, cx + width // 3, height * 1.3], fill=shirt)
    draw.ellipse([cx - width // 8, height * 0.18, cx + width // 8, height * 0.6], fill=skin)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        color = tuple(int(v) for v in rng.integers(0, 255, size=3))
        draw.line(
            [x0, y0, x0 + int(rng.integers(-80, 80)), y0 + int(rng.integers(-80, 80))],
            fill=color,
            width=3,
        )
    pixels = np.asarray(image, dtype=np.float64) + rng.normal(0, 6, size=(height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def seed_hf_cache(
    cache_dir: Path, weights: Path, model_name: str = "ViT-B-32", tag: str = "openai"
) -> Path:
    """Lay `weights` out as the Hugging Face cache holds the tag's download (design.md: blob named by
    its sha256, snapshot symlink, refs/main), so the real offline loading path finds it."""
    meta = read_sidecar(weights)
    assert meta is not None
    repo_id, names = hub_files(model_name, tag)
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    blob = repo / "blobs" / meta.sha256
    snapshot = repo / "snapshots" / HF_REVISION / names[-1]
    blob.parent.mkdir(parents=True, exist_ok=True)
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        os.link(weights, blob)
    if not snapshot.is_symlink():
        snapshot.symlink_to(Path("../../blobs") / meta.sha256)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(HF_REVISION)
    return snapshot


def random_weights(path: Path) -> WeightsMeta:
    meta = read_sidecar(path) if path.is_file() else None
    return meta or write_random_weights(path, "ViT-B-32", quick_gelu=True, seed=0)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process read exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLIP_", "API_", "WORKER_"))}
    env.update(settings.environment())
    env["HF_HUB_OFFLINE"] = "1"
    env["LOG_FORMAT"] = "json"
    return env


class ServiceProcess:
    """A real `photoembed` command in a child process, its output kept in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        handle = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "photoembed.cli", *self.args],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, pattern: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log):
                return
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.args} exited {self.process.returncode}:\n{self.log[-4000:]}"
                )
            time.sleep(0.2)
        raise AssertionError(
            f"{pattern!r} not in the log of {self.args} after {timeout}s:\n{self.log[-4000:]}"
        )

    def wait(self, timeout: float = 120.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0, *, group: bool = True) -> None:
        """Signal the process group (kill -9 of a whole worker), or with group=False only the main
        process, as `docker stop` does: Dramatiq forwards it, and a second SIGTERM would mean "kill"."""
        if self.process is None or self.process.poll() is not None:
            return
        if group:
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


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
