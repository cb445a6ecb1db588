"""What a model is and where its weights are: plain data, importable without torch (the ONNX
worker carries a plan without ever importing OpenCLIP)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
