"""Text queries without torch: the text tower of the configured weights in ONNX Runtime, found
through the towers manifest (`towers`), with the tokenizer's merges file that `photoembed model
onnx` copied beside it. The API needs neither torch nor OpenCLIP, nor the weights themselves.
Opening the text tower runs the probe texts recorded at export through this tokenizer and session
again; a difference beyond TEXT_PARITY_TOLERANCE refuses it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from photoembed.clip import model_files
from photoembed.clip.errors import ModelLoadError
from photoembed.clip.runtimes.onnx_runtime import create_session, normalise
from photoembed.clip.tokenizer import ClipTokenizer
from photoembed.logging import get_logger

log = get_logger(__name__)

TEXT_FORMAT = "photoembed-onnx-text/1"
TEXT_PARITY_TOLERANCE = 1e-5


@dataclass(frozen=True)
class OnnxTextMeta:
    """The sidecar of an exported text tower."""

    identity: str
    weights_sha256: str
    embed_dim: int
    onnx_sha256: str
    merges_file: str  # beside the ONNX file
    merges_sha256: str
    context_length: int
    probe_texts: list[str]
    probe_vectors: list[list[float]]
    export_parity_max_abs: float
    format: str = TEXT_FORMAT

    def write(self, onnx_path: Path) -> Path:
        return model_files.write_sidecar(onnx_path, self)

    @classmethod
    def read(cls, onnx_path: Path) -> OnnxTextMeta | None:
        meta = model_files.read_sidecar(onnx_path, cls, "ONNX text model")
        return meta if meta is not None and meta.format == TEXT_FORMAT else None


class OnnxTextEncoder:
    """Texts to L2-normalised vectors: the torch-free tokenizer and the exported text tower."""

    def __init__(self, path: Path, threads: int) -> None:
        started = time.perf_counter()
        meta = OnnxTextMeta.read(path)
        if meta is None:
            raise ModelLoadError(
                f"{path} has no {TEXT_FORMAT} sidecar; run `photoembed model onnx`"
            )
        if meta.onnx_sha256 != model_files.sha256_file(path):
            raise ModelLoadError(
                f"{path} is not the file its sidecar describes; run `photoembed model onnx` again"
            )
        self.identity = meta.identity
        self.tokenizer = ClipTokenizer(path.parent / meta.merges_file, meta.context_length)
        self.session = create_session(path, threads)
        vectors = self.embed(meta.probe_texts)
        diff = float(np.max(np.abs(vectors - np.asarray(meta.probe_vectors, dtype=np.float32))))
        if diff > TEXT_PARITY_TOLERANCE:
            raise ModelLoadError(
                f"the ONNX text model {path} embeds its probe texts {diff:.2e} (max abs) away from "
                f"the torch model it was exported from (tolerance {TEXT_PARITY_TOLERANCE:.0e}); "
                f"delete it so that `photoembed model onnx` exports it again"
            )
        log.info(
            "model.text_loaded",
            runtime="onnx",
            model=self.identity,
            onnx=str(path),
            probe_max_abs=diff,
            duration_ms=round((time.perf_counter() - started) * 1000),
        )

    def embed(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(texts)
        (features,) = self.session.run(None, {"tokens": tokens})
        return normalise(features)


def text_onnx_path(image_onnx: Path) -> Path:
    """The text tower is exported beside the image tower of the same weights."""
    return image_onnx.with_name(image_onnx.stem + "-text.onnx")
