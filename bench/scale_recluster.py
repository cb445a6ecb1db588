"""`make bench-scale`'s recluster: a library whose faces are all unplaced (as after a backfill or a
model change) regrouped by `photoembed faces recluster --library`, while a real worker groups new
uploads into it and another library takes its own grouping lock.

Reports the recluster's time (and its steps), how long the grouping lock of that library and of
another one made a grouping wait meanwhile, and when each photo uploaded meanwhile had its faces
grouped, against the recluster's start and end."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import httpx
import psycopg

from photoembed.config import Settings
from photoembed.devstack import ServiceProcess, settings_env
from photoembed.faces import samples
from photoembed.faces.grouping import GROUPING_LOCK
from photoembed.samples import encode
from photoembed.seeding import SeededLibrary, seed_libraries

FACES_PER_PHOTO = (0.0, 1 / 3, 2 / 3)  # 1.67 a photo: 100,000 faces in 60,000 photos
UPLOAD_EVERY_S = 3.0


def seed_unplaced(
    libpq_url: str, faces: int, *, clip_model: str, face_model: str, first_photo: int
) -> SeededLibrary:
    """A library of `faces` faces nobody has placed (no person, no CLIP vectors: a recluster reads
    only faces), its photos numbered after `first_photo`."""
    photos = round(faces / (FACES_PER_PHOTO[1] + 2 * FACES_PER_PHOTO[2]))
    return seed_libraries(
        libpq_url,
        [photos],
        clip_model=clip_model,
        face_model=face_model,
        seed=7,
        placed=False,
        prefix="unplaced",
        vectors=False,
        faces_per_photo=FACES_PER_PHOTO,
        first_photo=first_photo,
    )[0]


class LockWatch(threading.Thread):
    """Takes a library's grouping lock as a photo's face stage would, every 0.2 s, and keeps the
    longest wait."""

    def __init__(self, libpq_url: str, library_id: uuid.UUID) -> None:
        super().__init__(daemon=True)
        self.url = libpq_url
        self.library = str(library_id)
        self.longest = 0.0
        self.tries = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url) as conn:
            while not self.stop.is_set():
                began = time.perf_counter()
                with conn.transaction():
                    conn.execute(
                        GROUPING_LOCK.replace(":library", "%(library)s"), {"library": self.library}
                    )
                self.longest = max(self.longest, time.perf_counter() - began)
                self.tries += 1
                time.sleep(0.2)


def _face_photos() -> list[bytes]:
    """Photos of real faces, a few of each person: what a customer uploads meanwhile."""
    faces = samples.real_faces()
    photos = []
    for name in ("hopper", "astronaut"):
        variants = samples.variants(faces[name], samples.FACE_SIDE[name])
        photos += [encode(image) for image in list(variants.values())[:6]]
    return photos


class Follower(threading.Thread):
    """Polls the photos uploaded so far, every 0.2 s, and records when (seconds after `began`)
    each one's face stage was DONE."""

    def __init__(self, client: httpx.Client, began: float) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.began = began
        self.sent: dict[str, float] = {}
        self.grouped: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def add(self, photo_id: str) -> None:
        with self.lock:
            self.sent[photo_id] = time.perf_counter() - self.began

    def run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                waiting = [p for p in self.sent if p not in self.grouped]
            for photo_id in waiting:
                body = self.client.get(f"/photos/{photo_id}").json()
                if body["faces_status"] in ("DONE", "FAILED"):
                    self.grouped[photo_id] = time.perf_counter() - self.began
            time.sleep(0.2)

    def wait_all(self, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while len(self.grouped) < len(self.sent) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.stop.set()
        self.join()


def recluster_while_uploading(
    settings: Settings,
    key: str,
    library: SeededLibrary,
    other: SeededLibrary,
    worker: ServiceProcess,
) -> dict[str, Any]:
    """The recluster of `library` with uploads into it meanwhile (the worker groups them) and
    lock watches on it and on `other`."""
    url = settings.database_url.replace("postgresql+psycopg", "postgresql")
    watches = [LockWatch(url, library.library_id), LockWatch(url, other.library_id)]
    for watch in watches:
        watch.start()
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{settings.api_port}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    began = time.perf_counter()
    follower = Follower(client, began)
    follower.start()
    recluster = subprocess.Popen(
        [sys.executable, "-m", "photoembed.cli", "faces", "recluster", "--library", library.name],
        env=settings_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pending = _face_photos()
    while recluster.poll() is None:
        if pending:
            response = client.post("/photos", files={"file": ("f.jpg", pending.pop(0))})
            response.raise_for_status()
            follower.add(response.json()["id"])
        time.sleep(UPLOAD_EVERY_S)
    stdout, stderr = recluster.communicate()
    seconds = time.perf_counter() - began
    if recluster.returncode != 0:
        raise SystemExit(f"recluster failed:\n{stderr[-3000:]}")
    follower.wait_all()
    for watch in watches:
        watch.stop.set()
        watch.join()
    client.close()
    delays = [
        follower.grouped[p] - sent for p, sent in follower.sent.items() if p in follower.grouped
    ]
    result = {
        "faces": library.faces,
        "seconds": round(seconds, 1),
        "output": stdout.strip().splitlines()[-1:],
        "longest_lock_wait_s": {"this library": round(watches[0].longest, 2),
                                "another library": round(watches[1].longest, 2)},
        "uploads_meanwhile": len(follower.sent),
        "grouped_before_it_ended": sum(1 for t in follower.grouped.values() if t <= seconds),
        "upload_to_grouped_s": {"max": round(max(delays), 1) if delays else None,
                                "mean": round(sum(delays) / len(delays), 1) if delays else None},
        "worker_log": str(worker.log_path),
    }  # fmt: skip
    print(f"  recluster: {result}", flush=True)
    return result
