"""`photoembed backfill`: give every photo a vector of the active model, without re-uploading.

After switching models (CLIP_MODEL_NAME / CLIP_PRETRAINED), photos keep their old vectors, and
search runs on the new model's. The backfill finds the photos with no vector of the active model
and embeds them in batches through the same image embedder as the worker. Each batch commits on its
own, so a crash loses at most one batch and a rerun continues where it stopped. With `enqueue` it
sends `backfill_photo` messages to the workers (which must run the new model) instead.
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import TextIO

from photoembed import repository
from photoembed.clip.contract import ImageEmbedder
from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.images import ImageError
from photoembed.logging import get_logger
from photoembed.photos import decode_limits, decode_stored, storage_for
from photoembed.storage import PhotoBytesMissing
from photoembed.vectors import insert_embedding

log = get_logger(__name__)


@dataclass
class BackfillResult:
    model: str
    missing: int
    embedded: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    enqueued: int = 0


class Progress:
    """A progress line on a terminal; `<label>.progress` log events (every few seconds) elsewhere
    (`backfill.progress`, `recluster.progress`)."""

    def __init__(
        self,
        total: int,
        stream: TextIO,
        interval: float = 2.0,
        *,
        label: str = "backfill",
        unit: str = "photos",
    ) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = stream
        self.interval = interval
        self.started = time.monotonic()
        self.last_logged = 0.0
        self.tty = stream.isatty()

    def update(self, done: int, failed: int, final: bool = False) -> None:
        elapsed = max(1e-9, time.monotonic() - self.started)
        rate = done / elapsed
        eta = (self.total - done - failed) / rate if rate > 0 else float("inf")
        if self.tty:
            width = 30
            filled = int(width * (done + failed) / max(1, self.total))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(
                f"\r{self.label} [{bar}] {done + failed}/{self.total}  {rate:.1f} {self.unit}/s  "
                f"ETA {eta:.0f}s" + ("\n" if final else "")
            )
            self.stream.flush()
        elif final or time.monotonic() - self.last_logged >= self.interval:
            self.last_logged = time.monotonic()
            log.info(
                f"{self.label}.progress",
                done=done,
                failed=failed,
                total=self.total,
                **{f"{self.unit}_per_s": round(rate, 2)},
                eta_s=None if eta == float("inf") else round(eta, 1),
            )


def run_backfill(
    settings: Settings,
    embedder: ImageEmbedder,
    *,
    batch_size: int = 16,
    all_statuses: bool = False,
    dry_run: bool = False,
    stream: TextIO = sys.stderr,
) -> BackfillResult:
    model = embedder.load().identity
    with session_scope(settings.database_url) as session:
        result = BackfillResult(
            model=model, missing=repository.count_missing_vectors(session, model, all_statuses)
        )
    log.info("backfill.started", model=model, missing=result.missing, dry_run=dry_run)
    if dry_run or result.missing == 0:
        return result

    storage = storage_for(settings)
    decode_mode = decode_limits(settings).decode_mode
    progress = Progress(result.missing, stream)
    skip: list[uuid.UUID] = []
    while True:
        with session_scope(settings.database_url) as session:
            batch = repository.photos_missing_vectors(
                session, model, all_statuses, skip, batch_size
            )
        if not batch:
            break
        images, ids = [], []
        for photo_id, key in batch:
            try:
                image, _ = decode_stored(settings, storage, key)
            except (ImageError, PhotoBytesMissing) as exc:
                result.failed[str(photo_id)] = str(exc)
                skip.append(photo_id)
                continue
            images.append(image)
            ids.append(photo_id)
        if images:
            vectors = embedder.embed_images(images)
            loaded = embedder.load()
            with session_scope(settings.database_url) as session:
                for photo_id, vector in zip(ids, vectors, strict=True):
                    insert_embedding(session, photo_id, vector.tolist(), loaded, decode_mode)
            result.embedded += len(ids)
        progress.update(result.embedded, len(result.failed))
    progress.update(result.embedded, len(result.failed), final=True)
    log.info(
        "backfill.finished",
        model=model,
        embedded=result.embedded,
        failed=len(result.failed),
    )
    return result


def enqueue_backfill(settings: Settings, model: str, *, all_statuses: bool = False) -> int:
    """Send one `backfill_photo` message per photo missing a vector of `model` to the workers."""
    from photoembed.queue import backfill_photo_message, build_broker

    broker = build_broker(settings)
    with session_scope(settings.database_url) as session:
        total = repository.count_missing_vectors(session, model, all_statuses)
        missing = repository.photos_missing_vectors(session, model, all_statuses, [], total)
    for photo_id, _ in missing:
        broker.enqueue(backfill_photo_message(settings, photo_id))
    log.info("backfill.enqueued", model=model, messages=len(missing))
    return len(missing)
