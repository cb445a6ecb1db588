"""The process's image embedder, for the configured runtime.

EMBED_RUNTIME=torch runs the model in PyTorch (`ClipEmbedder`, any backend and device);
EMBED_RUNTIME=onnx runs OpenCLIP's image tower, exported from the same weights, in ONNX Runtime on
the CPU (`OnnxEmbedder`), and the worker process never imports torch. Both give the same vectors
within the self-check's tolerance and store them under the same model identity. `auto` (the
default) takes ONNX Runtime on a CPU and torch on a GPU (see `photoembed.sizing`).

Nothing here imports torch at module level: this module decides which runtime is imported, so
the imports below are inside the function on purpose.
"""

from __future__ import annotations

import os

from photoembed.clip.contract import ImageEmbedder
from photoembed.config import Settings

_embedder: ImageEmbedder | None = None
_embedder_pid: int | None = None


def image_embedder(settings: Settings) -> ImageEmbedder:
    """The process's image embedder for the configured runtime (text tower not kept); a forked
    child gets its own, never the parent's. `settings` must be resolved (`sizing.resolve`)."""
    global _embedder, _embedder_pid
    if _embedder is None or _embedder_pid != os.getpid():
        if settings.embed_runtime == "onnx":
            from photoembed.clip.runtimes.onnx_runtime import OnnxEmbedder

            _embedder = OnnxEmbedder(settings)
        else:
            from photoembed.clip.runtimes.torch_runtime import ClipEmbedder

            _embedder = ClipEmbedder(settings, image_only=True)
        _embedder_pid = os.getpid()
    return _embedder
