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

from photoembed.clip.contract import ImageEmbedder
from photoembed.config import Settings
from photoembed.lazy import PerProcess

_embedder: PerProcess[ImageEmbedder] = PerProcess()


def image_embedder(settings: Settings) -> ImageEmbedder:
    """The process's image embedder for the configured runtime (text tower not kept); a forked
    child gets its own, never the parent's. `settings` must be resolved (`sizing.resolve`)."""

    def create() -> ImageEmbedder:
        if settings.embed_runtime == "onnx":
            from photoembed.clip.runtimes.onnx_runtime import OnnxEmbedder

            return OnnxEmbedder(settings)
        from photoembed.clip.runtimes.torch_runtime import ClipEmbedder

        return ClipEmbedder(settings, image_only=True)

    return _embedder.get(create)
