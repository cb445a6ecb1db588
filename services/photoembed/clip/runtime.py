"""What the worker needs from an embedder, whichever runtime runs the image tower.

EMBED_RUNTIME=torch runs the model in PyTorch (`ClipEmbedder`, any backend and device);
EMBED_RUNTIME=onnx runs OpenCLIP's image tower, exported from the same weights, in ONNX Runtime on
the CPU (`OnnxEmbedder`), and the worker process never imports torch. Both give the same vectors
within the self-check's tolerance and store them under the same model identity. `auto` (the
default) takes ONNX Runtime on a CPU and torch on a GPU (see `photoembed.sizing`).

Nothing here imports torch: this module decides which one is imported.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from photoembed.clip.batching import MicroBatcher, observe_batch
from photoembed.clip.plan import ModelPlan
from photoembed.config import Settings
from photoembed.images import DecodeLimits, ImageInfo, load_rgb
from photoembed.metrics import DECODE_SECONDS, MODEL_LOAD_SECONDS
from photoembed.quality import quality_score
from photoembed.sizing import plan_sizing


class LoadedInfo(Protocol):
    """What a loaded model says about itself: enough to label and check its vectors."""

    @property
    def plan(self) -> ModelPlan: ...
    @property
    def identity(self) -> str: ...
    @property
    def weights_sha256(self) -> str: ...
    @property
    def embed_dim(self) -> int: ...
    @property
    def load_seconds(self) -> float: ...


@dataclass(frozen=True)
class EmbeddedPhoto:
    vector: np.ndarray
    quality: float
    info: ImageInfo


class ImageEmbedder(Protocol):
    def load(self) -> LoadedInfo: ...

    @property
    def precision(self) -> str:
        """The arithmetic the image tower runs in: fp32, or a reduced one on a GPU."""
        ...

    def embed_images(self, images: Sequence[Image.Image], *, exact: bool = False) -> np.ndarray:
        """Images to L2-normalised embeddings, as one batch. `exact` runs in full fp32 whatever
        the configured precision (the self-check compares both)."""
        ...

    def embed_photo(self, data: bytes, limits: DecodeLimits) -> EmbeddedPhoto:
        """A stored photo's bytes to its vector and quality score: decoded where it is cheapest,
        embedded in a batch with whatever other threads of this process submit meanwhile."""
        ...


def inference_threads(settings: Settings) -> int:
    """Intra-op threads, as sizing decides them for settings not resolved yet (the API, tools)."""
    return plan_sizing(settings).inference_threads


# One batcher item: preprocessed pixels (C, H, W), or what a runtime decodes itself.
BatchItem = object
# One batcher result: the vector, and the quality score when the runtime computed it.
BatchResult = tuple[np.ndarray, float | None]


class BatchedEmbedder(ABC):
    """The part every runtime shares: one per process, cheap to create, loaded lazily under a
    lock, and a micro-batcher that runs the photos of all worker threads as one forward pass."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._loaded: LoadedInfo | None = None
        self._batcher: MicroBatcher[BatchItem, BatchResult] = MicroBatcher(
            self._run_batch,
            max_batch=settings.embed_batch_size,
            max_wait=settings.embed_batch_wait_ms / 1000,
            on_batch=observe_batch,
            retry_smaller=self._is_device_error,
        )

    def load(self) -> LoadedInfo:
        with self._lock:
            if self._loaded is None:
                started = time.perf_counter()
                self._loaded = self._load(started)
                MODEL_LOAD_SECONDS.set(self._loaded.load_seconds)
            return self._loaded

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
        return EmbeddedPhoto(vector=vector, quality=quality, info=info)

    def _run_batch(self, items: list[BatchItem]) -> Sequence[BatchResult | BaseException]:
        vectors = self.embed_pixels(np.stack(items))  # type: ignore[arg-type]
        return [(vector, None) for vector in vectors]

    def _is_device_error(self, exc: BaseException) -> bool:
        """Errors worth retrying the batch in smaller pieces (a GPU out of memory, for one)."""
        return False


_embedder: ImageEmbedder | None = None
_embedder_pid: int | None = None


def image_embedder(settings: Settings) -> ImageEmbedder:
    """The process's image embedder for the configured runtime (text tower not kept); a forked
    child gets its own, never the parent's. `settings` must be resolved (`sizing.resolve`)."""
    global _embedder, _embedder_pid
    if _embedder is None or _embedder_pid != os.getpid():
        if settings.embed_runtime == "onnx":
            from photoembed.clip.onnx_runtime import OnnxEmbedder

            _embedder = OnnxEmbedder(settings)
        else:
            from photoembed.clip.embedder import ClipEmbedder

            _embedder = ClipEmbedder(settings, image_only=True)
        _embedder_pid = os.getpid()
    return _embedder
