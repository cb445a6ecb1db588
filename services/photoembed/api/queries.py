"""Text and image search queries in the API process, in ONNX Runtime: for OpenCLIP models (the
default) torch is never imported here.

The towers are the ones `photoembed model onnx` exported for the configured weights and named in
its manifest (`clip.runtimes.towers`): a worker on the CPU prepares them when it starts, the
container image bakes them. Where no manifest exists yet and torch is installed, the first query
runs `photoembed model onnx` in a child process, as the worker does; without torch it is a
`ModelLoadError` (503) that says what to run. Each tower is opened on the first query that needs it,
and text query vectors are kept by (model, text), the most recent TEXT_CACHE_SIZE of them.

EMBED_BACKEND=transformers has no ONNX export: its queries run in torch (`TorchQueries`, imported
on the first such query), with the checkpoint's own tokenizer.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from PIL import Image

from photoembed.clip.errors import ModelLoadError
from photoembed.clip.runtimes.onnx_runtime import OnnxLoaded, open_prepared, run_session
from photoembed.clip.runtimes.onnx_text import OnnxTextEncoder
from photoembed.clip.runtimes.towers import TowersManifest, onnx_folder, prepared_towers
from photoembed.config import Settings
from photoembed.lazy import LoadOnce
from photoembed.logging import get_logger
from photoembed.search import QueryVector

if TYPE_CHECKING:
    from photoembed.clip.runtimes.torch_runtime import ClipEmbedder

log = get_logger(__name__)

TEXT_CACHE_SIZE = 4096


def query_settings(settings: Settings) -> Settings:
    """Queries run on the CPU in ONNX Runtime, whatever runtime and device the workers use."""
    return settings.model_copy(update={"embed_runtime": "onnx", "clip_device": "cpu"})


class TorchQueries:
    """The checkpoint's towers in torch, for backends without an ONNX export."""

    def __init__(self, settings: Settings) -> None:
        runtime = settings.model_copy(update={"embed_runtime": "torch"})
        self._embedder: LoadOnce[ClipEmbedder] = LoadOnce(lambda: self._create(runtime))

    @staticmethod
    def _create(settings: Settings) -> ClipEmbedder:
        from photoembed.clip.runtimes.torch_runtime import ClipEmbedder
        from photoembed.sizing import resolve

        embedder = ClipEmbedder(resolve(settings))
        embedder.load()
        return embedder

    def embed_text(self, text: str) -> QueryVector:
        embedder = self._embedder.get()
        return QueryVector(embedder.embed_texts([text])[0].tolist(), embedder.load().identity)

    def embed_image(self, image: Image.Image) -> QueryVector:
        embedder = self._embedder.get()
        return QueryVector(embedder.embed_images([image])[0].tolist(), embedder.load().identity)


class QueryEmbedder:
    def __init__(self, settings: Settings) -> None:
        self._torch = TorchQueries(settings) if settings.embed_backend != "open_clip" else None
        self._settings = query_settings(settings)
        self._threads = min(4, os.cpu_count() or 1)
        self._manifest: LoadOnce[TowersManifest] = LoadOnce(lambda: prepared_towers(self._settings))
        self._text: LoadOnce[OnnxTextEncoder] = LoadOnce(self._open_text)
        self._image: LoadOnce[OnnxLoaded] = LoadOnce(self._open_image)
        self._cache: OrderedDict[tuple[str, str], QueryVector] = OrderedDict()
        self._cache_lock = threading.Lock()

    def _open_text(self) -> OnnxTextEncoder:
        manifest = self._manifest.get()
        if manifest.text_onnx is None:
            raise ModelLoadError(f"text search is not available: {manifest.text_error}")
        return OnnxTextEncoder(onnx_folder(self._settings) / manifest.text_onnx, self._threads)

    def _open_image(self) -> OnnxLoaded:
        path = onnx_folder(self._settings) / self._manifest.get().image_onnx
        return open_prepared(path, self._threads, time.perf_counter())

    def embed_text(self, text: str) -> QueryVector:
        if self._torch is not None:
            return self._torch.embed_text(text)
        encoder = self._text.get()
        key = (encoder.identity, text)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        vector = QueryVector(encoder.embed([text])[0].tolist(), encoder.identity)
        with self._cache_lock:
            self._cache[key] = vector
            if len(self._cache) > TEXT_CACHE_SIZE:
                self._cache.popitem(last=False)
        return vector

    def embed_image(self, image: Image.Image) -> QueryVector:
        if self._torch is not None:
            return self._torch.embed_image(image)
        loaded = self._image.get()
        vector = run_session(loaded.session, loaded.preprocessing(image)[None])[0]
        return QueryVector(vector.tolist(), loaded.identity)
