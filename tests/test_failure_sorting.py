"""How the pipeline sorts a photo's failures, in process and fast: Dramatiq's StubBroker and a
Worker in this process run an actor built like the real one (same pipeline, same retry rule),
against the real Postgres and storage, through the real upload path. Only the embedder is a stub,
decoding for real and failing where a case needs it; the real model's path is proven by the
end-to-end tests, which start worker processes.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import numpy as np
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage
from PIL import Image

from photoembed.clip.contract import EmbeddedPhoto, ModelPlan
from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.images import DecodeLimits, load_rgb
from photoembed.models import DEFAULT_LIBRARY_ID, Embedding, Photo
from photoembed.photos import accept_photo, storage_for
from photoembed.queue import EMBED_PHOTO
from photoembed.samples import encode, make_photo
from photoembed.storage import LocalStorage
from photoembed.worker.pipeline import process_photo, retried_when_transient, retry_rule

# The stub's failures are chosen by image width.
RAISES_IN_MODEL = 301
GIVES_NAN = 302


class StubLoaded:
    plan = ModelPlan(
        model_name="stub",
        pretrained="stub",
        tag="stub",
        source="file",
        weights_path=Path("/nonexistent"),
        quick_gelu=True,
        activation_source="test",
        expected_sha256="0" * 64,
        metadata_quick_gelu=True,
        cache_dir=Path("/nonexistent"),
    )
    identity = "stub:model"
    weights_sha256 = "0" * 64
    embed_dim = 512
    load_seconds = 0.0


class StubEmbedder:
    """Decodes with the product's decoder; the 'model' is a fixed unit vector."""

    precision = "fp32"

    def load(self) -> StubLoaded:
        return StubLoaded()

    def embed_images(self, images: list[Image.Image], *, exact: bool = False) -> np.ndarray:
        raise NotImplementedError

    def embed_photo(self, data: bytes, limits: DecodeLimits) -> EmbeddedPhoto:
        _image, info = load_rgb(data, limits)
        if info.width == RAISES_IN_MODEL:
            raise RuntimeError("the stub model fell over")
        vector = np.full(512, 1 / math.sqrt(512), dtype=np.float32)
        if info.width == GIVES_NAN:
            vector[0] = np.nan
        return EmbeddedPhoto(vector=vector, quality=0.5, info=info, decode_mode=limits.decode_mode)


@pytest.fixture
def stub_stack(settings: Settings) -> Iterator[tuple[Settings, StubBroker, dramatiq.Worker]]:
    """A StubBroker with the embed actor on this test's queue, and a Worker of two threads."""
    settings = settings.model_copy(
        update={"max_attempts": 3, "retry_min_backoff_ms": 10, "retry_max_backoff_ms": 20}
    )
    broker = StubBroker()
    broker.add_middleware(CurrentMessage())
    storage = storage_for(settings)
    embedder = StubEmbedder()

    @dramatiq.actor(
        broker=broker,
        actor_name=EMBED_PHOTO,
        queue_name=settings.queue_name,
        retry_when=retry_rule(settings.max_retries),
        min_backoff=settings.retry_min_backoff_ms,
        max_backoff=settings.retry_max_backoff_ms,
    )
    def embed_photo(photo_id: str) -> None:
        message = CurrentMessage.get_current_message()
        assert message is not None
        with retried_when_transient():
            process_photo(uuid.UUID(photo_id), message.message_id, settings, embedder, storage)

    # started by the first _drain, so that a test can damage what it uploaded first
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    yield settings, broker, worker
    worker.stop()
    broker.close()


def _upload(settings: Settings, broker: StubBroker, image: Image.Image, fmt: str = "JPEG") -> Photo:
    storage = storage_for(settings)
    writer = storage.staging(settings.max_upload_bytes)
    writer.write(encode(image, fmt))
    return accept_photo(settings, storage, broker, writer.finish(), DEFAULT_LIBRARY_ID, None)  # type: ignore[arg-type]


def _drain(settings: Settings, broker: StubBroker, worker: dramatiq.Worker) -> None:
    if not worker.workers:
        worker.start()
    broker.join(settings.queue_name, fail_fast=False, timeout=60_000)
    worker.join()


def _outcome(settings: Settings, photo_id: uuid.UUID) -> tuple[str, str | None, int, int]:
    with session_scope(settings.database_url) as session:
        photo = session.get(Photo, photo_id)
        assert photo is not None
        vectors = session.query(Embedding).filter(Embedding.photo_id == photo_id).count()
        return photo.status, photo.error, photo.attempts, vectors


def test_each_kind_of_failure_ends_where_it_belongs(stub_stack):
    settings, broker, worker = stub_stack
    # given photos that embed, that the decoder refuses, whose bytes vanish, that the model fails
    # on, and whose vector the database refuses
    good = _upload(settings, broker, make_photo(1, (320, 240)))
    damaged = _upload(settings, broker, make_photo(2, (320, 240)), "PNG")
    vanished = _upload(settings, broker, make_photo(3, (320, 240)))
    model_error = _upload(settings, broker, make_photo(4, (RAISES_IN_MODEL, 240)))
    refused = _upload(settings, broker, make_photo(5, (GIVES_NAN, 240)))
    local = LocalStorage(settings.storage_dir)
    local.path_for(damaged.storage_key).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    local.path_for(vanished.storage_key).unlink()

    # when the worker has drained the queue
    _drain(settings, broker, worker)

    # then: READY with one vector; a bad image FAILED at the first attempt; missing bytes retried
    # until MAX_ATTEMPTS, then FAILED naming the storage setting; a model error and a database
    # refusal FAILED at once, each with a readable reason; no vector for any failure
    assert _outcome(settings, good.id) == ("READY", None, 1, 1)

    status, error, attempts, vectors = _outcome(settings, damaged.id)
    assert (status, attempts, vectors) == ("FAILED", 1, 0)
    assert error is not None and error.startswith("not a recognised image")

    status, error, attempts, vectors = _outcome(settings, vanished.id)
    assert (status, attempts, vectors) == ("FAILED", 3, 0)
    assert error is not None and "gave up after 3 attempts" in error and "STORAGE_URL" in error

    status, error, attempts, vectors = _outcome(settings, model_error.id)
    assert (status, attempts, vectors) == ("FAILED", 1, 0)
    assert error == "embedding failed: RuntimeError: the stub model fell over"

    status, error, attempts, vectors = _outcome(settings, refused.id)
    assert (status, attempts, vectors) == ("FAILED", 1, 0)
    assert error is not None and error.startswith("could not store the embedding:")
    assert "NaN" in error


def test_a_redelivered_message_of_a_finished_photo_changes_nothing(stub_stack):
    settings, broker, worker = stub_stack
    # given a photo that is READY
    photo = _upload(settings, broker, make_photo(6, (320, 240)))
    _drain(settings, broker, worker)
    assert _outcome(settings, photo.id) == ("READY", None, 1, 1)

    # when its message comes again (at-least-once delivery)
    broker.actors[EMBED_PHOTO].send(str(photo.id))
    _drain(settings, broker, worker)

    # then it is skipped: still one attempt and one vector
    assert _outcome(settings, photo.id) == ("READY", None, 1, 1)
