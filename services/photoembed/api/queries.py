"""Text and image search queries: the model in the API process, loaded on the first such query.

torch is imported then and not before, so an API that serves uploads, reads and photo or person
searches stays small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image

from photoembed.config import Settings
from photoembed.lazy import LoadOnce
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
        self._embedder: LoadOnce[ClipEmbedder] = LoadOnce(self._create)

    def _create(self) -> ClipEmbedder:
        from photoembed.clip.runtimes.torch_runtime import ClipEmbedder

        return ClipEmbedder(query_settings(self._settings))

    def _loaded(self) -> ClipEmbedder:
        embedder = self._embedder.get()
        embedder.load()
        return embedder

    def embed_text(self, text: str) -> QueryVector:
        embedder = self._loaded()
        return QueryVector(embedder.embed_texts([text])[0].tolist(), embedder.load().identity)

    def embed_image(self, image: Image.Image) -> QueryVector:
        embedder = self._loaded()
        return QueryVector(embedder.embed_images([image])[0].tolist(), embedder.load().identity)
