"""Text and image search queries: the model in the API process, loaded on the first such query.

torch is imported then and not before, so an API that serves uploads, reads and photo or person
searches stays small.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from PIL import Image

from photoembed.config import Settings
from photoembed.search import QueryVector
from photoembed.sizing import resolve

if TYPE_CHECKING:
    from photoembed.clip.runtimes.torch_runtime import ClipEmbedder


def query_settings(settings: Settings) -> Settings:
    """Queries run in torch (the text tower needs it), whatever runtime the workers use."""
    return resolve(settings.model_copy(update={"embed_runtime": "torch"}))


class QueryEmbedder:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._embedder: ClipEmbedder | None = None

    def _loaded(self) -> ClipEmbedder:
        with self._lock:
            if self._embedder is None:
                from photoembed.clip.runtimes.torch_runtime import ClipEmbedder

                self._embedder = ClipEmbedder(query_settings(self._settings))
        self._embedder.load()
        return self._embedder

    def embed_text(self, text: str) -> QueryVector:
        embedder = self._loaded()
        return QueryVector(embedder.embed_texts([text])[0].tolist(), embedder.load().identity)

    def embed_image(self, image: Image.Image) -> QueryVector:
        embedder = self._loaded()
        return QueryVector(embedder.embed_images([image])[0].tolist(), embedder.load().identity)
