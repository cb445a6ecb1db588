"""OnnxEmbedder: OpenCLIP's image tower in ONNX Runtime on the CPU, in a worker that never imports
torch (importing OpenCLIP alone costs ~750 MB of resident memory; the CPU worker image has none).

The tower is found through the towers manifest (`towers.prepared_towers`). Where torch is
installed, `photoembed model onnx` runs first in a child process: it plans the configured model
exactly as the torch runtime would (same checksum, same activation, same identity), exports the
image tower next to the weights on first use, checks it against the torch model and writes a
sidecar (see `onnx_export`). The CPU image ran that at build and carries the export alone. Either
way the worker then reads the sidecar, opens the ONNX file and embeds the self-check's probe image
through its own preprocessing, which must match the torch model's vector recorded at export within
the self-check's tolerance.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from photoembed.clip import model_files
from photoembed.clip.contract import ModelPlan
from photoembed.clip.errors import ModelLoadError
from photoembed.clip.preprocessing import Preprocessing
from photoembed.clip.probe import REFERENCE_TOLERANCE, max_abs_difference, probe_image
from photoembed.clip.runtimes.base import BatchedEmbedder
from photoembed.clip.runtimes.towers import onnx_folder, prepared_towers
from photoembed.logging import get_logger

log = get_logger(__name__)

ONNX_FORMAT = "photoembed-onnx/1"
# Same bar as the self-check's reference vector: recomputation noise passes, GELU for QuickGELU not.
PARITY_TOLERANCE = REFERENCE_TOLERANCE


@dataclass(frozen=True)
class OnnxMeta:
    """The sidecar of an exported image tower: which weights it came from and how it was checked."""

    plan: dict[str, Any]
    identity: str
    weights_sha256: str
    embed_dim: int
    onnx_sha256: str
    preprocessing: dict[str, Any]
    probe_vector: list[float]
    export_parity_max_abs: float
    format: str = ONNX_FORMAT

    def write(self, onnx_path: Path) -> Path:
        return model_files.write_sidecar(onnx_path, self)

    @classmethod
    def read(cls, onnx_path: Path) -> OnnxMeta | None:
        meta = model_files.read_sidecar(onnx_path, cls, "ONNX model")
        return meta if meta is not None and meta.format == ONNX_FORMAT else None


@dataclass(frozen=True)
class OnnxLoaded:
    plan: ModelPlan
    identity: str
    weights_sha256: str
    embed_dim: int
    load_seconds: float
    path: Path
    preprocessing: Preprocessing
    session: Any  # onnxruntime.InferenceSession (untyped)


_ORT_LOG_LINE = re.compile(r"\[[WEF]:onnxruntime:")
_ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


@contextlib.contextmanager
def _stderr_as_warnings() -> Iterator[None]:
    """ONNX Runtime logs from C++ straight to file descriptor 2. While a session is created, catch
    its lines and raise each as a Python warning, which the self-check refuses like any other;
    anything else written meanwhile goes back to stderr untouched."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines()
    for line in lines:
        if _ORT_LOG_LINE.search(line):
            plain = _ANSI_COLOUR.sub("", line).strip()
            warnings.warn(f"onnxruntime: {plain}", RuntimeWarning, stacklevel=3)
        elif line.strip():
            print(line, file=sys.stderr)


def create_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 2  # warnings and worse reach fd 2, and so the self-check
    # Idle inference threads sleep instead of spinning: the worker's threads decode photos on the
    # same cores between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with _stderr_as_warnings():
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def normalise(features: np.ndarray) -> np.ndarray:
    """A tower's output (N, D) as float32 unit vectors."""
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    result: np.ndarray = features / np.maximum(norms, 1e-12)
    return result


def run_session(session: Any, batch: np.ndarray) -> np.ndarray:
    """Preprocessed images (N, C, H, W) to L2-normalised embeddings (N, D)."""
    (features,) = session.run(None, {"pixels": np.ascontiguousarray(batch, dtype=np.float32)})
    return normalise(features)


def open_prepared(path: Path, threads: int, started: float) -> OnnxLoaded:
    """Open an ONNX file that `photoembed model onnx` has just checked against its sidecar, its
    passes on `threads` intra-op threads."""
    if not path.is_file():
        raise ModelLoadError(
            f"the ONNX image model {path} is missing: run `photoembed model onnx` with these "
            f"settings where 'photoembed[worker]' is installed (the worker image's model stage "
            f"does, at build), or set EMBED_RUNTIME=torch"
        )
    meta = OnnxMeta.read(path)
    if meta is None:
        raise ModelLoadError(f"{path} has no {ONNX_FORMAT} sidecar; run `photoembed model onnx`")
    session = create_session(path, threads)
    loaded = OnnxLoaded(
        plan=ModelPlan.from_description(meta.plan),
        identity=meta.identity,
        weights_sha256=meta.weights_sha256,
        embed_dim=meta.embed_dim,
        load_seconds=time.perf_counter() - started,
        path=path,
        preprocessing=Preprocessing(**meta.preprocessing),
        session=session,
    )
    _check_probe(loaded, meta)
    return loaded


def _check_probe(loaded: OnnxLoaded, meta: OnnxMeta) -> None:
    """This runtime, preprocessing included, must give the probe vector the torch model gave."""
    vector = run_session(loaded.session, loaded.preprocessing(probe_image())[None])[0]
    diff = max_abs_difference(vector, np.asarray(meta.probe_vector, dtype=np.float32))
    if diff > PARITY_TOLERANCE:
        raise ModelLoadError(
            f"the ONNX image model {loaded.path} embeds the probe image {diff:.2e} (max abs) away "
            f"from the torch model it was exported from (tolerance {PARITY_TOLERANCE:.0e}). Fix: "
            f"delete it so that it is exported again, or set EMBED_RUNTIME=torch."
        )


class OnnxEmbedder(BatchedEmbedder):
    """The worker's image embedder on ONNX Runtime; same interface and batching as ClipEmbedder."""

    runtime = "onnx"

    def load(self) -> OnnxLoaded:
        loaded = super().load()
        assert isinstance(loaded, OnnxLoaded)
        return loaded

    def _load(self, started: float) -> OnnxLoaded:
        log.info("model.loading", runtime="onnx")
        towers = prepared_towers(self._settings, check_weights=True)
        path = onnx_folder(self._settings) / towers.image_onnx
        loaded = open_prepared(path, self._inference_threads, started)
        log.info(
            "model.loaded",
            runtime="onnx",
            model=loaded.identity,
            onnx=str(path),
            embed_dim=loaded.embed_dim,
            device="cpu",
            duration_ms=round(loaded.load_seconds * 1000),
        )
        return loaded

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.load().preprocessing(image)

    def embed_pixels(self, batch: np.ndarray, *, exact: bool = False) -> np.ndarray:
        return run_session(self.load().session, batch)
