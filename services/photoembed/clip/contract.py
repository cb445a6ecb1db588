"""What every part of the model package agrees on: what a model is and where its weights are
(`ModelPlan`), what a loaded model says about itself (`LoadedInfo`) and what the worker needs from
an embedder whichever runtime runs it (`ImageEmbedder`). Plain data and protocols, importable
without torch (the ONNX worker carries a plan without ever importing OpenCLIP)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image

from photoembed.images import DecodeLimits, ImageInfo

WeightsSource = Literal["file", "cache", "hub"]


@dataclass(frozen=True)
class ModelPlan:
    model_name: str
    pretrained: str
    tag: str | None
    source: WeightsSource
    weights_path: Path | None
    quick_gelu: bool
    activation_source: str
    expected_sha256: str | None
    metadata_quick_gelu: bool | None
    cache_dir: Path
    backend: str = "open_clip"

    @property
    def activation(self) -> str:
        return "quickgelu" if self.quick_gelu else "gelu"

    def identity(self, sha256: str | None) -> str:
        """The name stored beside every vector: same identity, same embeddings."""
        weights = self.tag or "file"
        digest = (sha256 or self.expected_sha256 or "unknown")[:12]
        return f"{self.backend}:{self.model_name}:{weights}:{digest}:{self.activation}"

    def describe(self) -> dict[str, Any]:
        info = asdict(self)
        info["weights_path"] = str(self.weights_path) if self.weights_path else None
        info["cache_dir"] = str(self.cache_dir)
        info["activation"] = self.activation
        return info

    @classmethod
    def from_description(cls, info: dict[str, Any]) -> ModelPlan:
        """The inverse of `describe`."""
        fields = {k: v for k, v in info.items() if k in cls.__dataclass_fields__}
        fields["weights_path"] = Path(info["weights_path"]) if info["weights_path"] else None
        fields["cache_dir"] = Path(info["cache_dir"])
        return cls(**fields)


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
    decode_mode: str  # DecodeLimits.decode_mode, or how a device decoded it


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


# One batcher item: preprocessed pixels (C, H, W), or what a runtime decodes itself.
BatchItem = object
# One batcher result: the vector, and the quality score when the runtime computed it.
BatchResult = tuple[np.ndarray, float | None]
