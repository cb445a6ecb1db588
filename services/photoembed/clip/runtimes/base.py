"""The part every runtime shares: one embedder per process, cheap to create, loaded lazily under a
lock, and a micro-batcher that runs the photos of all worker threads as one forward pass.
Nothing here imports torch."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from PIL import Image

from photoembed.clip.batching import MicroBatcher, observe_batch
from photoembed.clip.contract import BatchItem, BatchResult, EmbeddedPhoto, LoadedInfo
from photoembed.config import Settings
from photoembed.images import DecodeLimits, load_rgb
from photoembed.lazy import LoadOnce
from photoembed.metrics import DECODE_SECONDS, MODEL_LOAD_SECONDS
from photoembed.quality import quality_score
from photoembed.sizing import plan_sizing


class BatchedEmbedder(ABC):
    """An image embedder whose runtime supplies `_load`, `preprocess` and `embed_pixels`."""

    #: EMBED_RUNTIME of this embedder: its threads and streams are sized for it, whatever the
    #: settings would pick (the API runs torch for text where a CPU worker runs ONNX Runtime).
    runtime: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        sizing = plan_sizing(settings.model_copy(update={"embed_runtime": self.runtime}))
        self._inference_threads = sizing.inference_threads
        self._model = LoadOnce(self._timed_load)
        self._batcher: MicroBatcher[BatchItem, BatchResult] = MicroBatcher(
            self._run_batch,
            max_batch=settings.embed_batch_size,
            max_wait=settings.embed_batch_wait_ms / 1000,
            on_batch=observe_batch,
            retry_smaller=self._is_device_error,
            streams=sizing.inference_streams,
        )

    def load(self) -> LoadedInfo:
        return self._model.get()

    def _timed_load(self) -> LoadedInfo:
        loaded = self._load(time.perf_counter())
        MODEL_LOAD_SECONDS.set(loaded.load_seconds)
        return loaded

    @property
    def precision(self) -> str:
        return "fp32"

    @abstractmethod
    def _load(self, started: float) -> LoadedInfo: ...

    @abstractmethod
    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One image to the model's input pixels (C, H, W), float32."""

    @abstractmethod
    def embed_pixels(self, batch: np.ndarray, *, exact: bool = False) -> np.ndarray:
        """Preprocessed images (N, C, H, W) to L2-normalised embeddings (N, D)."""

    def embed_images(self, images: Sequence[Image.Image], *, exact: bool = False) -> np.ndarray:
        return self.embed_pixels(
            np.stack([self.preprocess(image) for image in images]), exact=exact
        )

    def embed_photo(self, data: bytes, limits: DecodeLimits) -> EmbeddedPhoto:
        started = time.perf_counter()
        image, info = load_rgb(data, limits)
        quality = quality_score(image, (info.width, info.height))
        pixels = self.preprocess(image)
        DECODE_SECONDS.observe(time.perf_counter() - started)
        vector, _ = self._batcher.submit(pixels)
        return EmbeddedPhoto(
            vector=vector, quality=quality, info=info, decode_mode=limits.decode_mode
        )

    def _run_batch(self, items: list[BatchItem]) -> Sequence[BatchResult | BaseException]:
        vectors = self.embed_pixels(np.stack(items))  # type: ignore[arg-type]
        return [(vector, None) for vector in vectors]

    def _is_device_error(self, exc: BaseException) -> bool:
        """Errors worth retrying the batch in smaller pieces (a GPU out of memory, for one)."""
        return False
