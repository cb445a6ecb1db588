"""What the worker needs from an embedder, whichever runtime runs the image tower.

EMBED_RUNTIME=torch runs the model in PyTorch (`ClipEmbedder`, any backend and device);
EMBED_RUNTIME=onnx runs OpenCLIP's image tower, exported from the same weights, in ONNX Runtime on
the CPU (`OnnxEmbedder`), and the worker process never imports torch. Both give the same vectors
within the self-check's tolerance and store them under the same model identity.

Nothing here imports torch: this module decides which one is imported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from PIL import Image

from photoembed.clip.plan import ModelPlan
from photoembed.config import Settings


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


class ImageEmbedder(Protocol):
    def load(self) -> LoadedInfo: ...

    def embed_image(self, image: Image.Image) -> np.ndarray:
        """One image, batched with whatever other threads of this process submit meanwhile."""
        ...

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...


def inference_threads(settings: Settings) -> int:
    """Intra-op threads: the process's share of the cores unless TORCH_THREADS says otherwise."""
    if settings.torch_threads > 0:
        return settings.torch_threads
    return max(1, (os.cpu_count() or 1) // max(1, settings.worker_processes))


_embedder: ImageEmbedder | None = None
_embedder_pid: int | None = None


def image_embedder(settings: Settings) -> ImageEmbedder:
    """The process's image embedder for the configured runtime (text tower not kept); a forked
    child gets its own, never the parent's."""
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
