"""The boot self-check: the model must load without a single warning and embed a known input right.

It records every Python warning and every WARNING-or-worse log record emitted while loading (OpenCLIP
reports some problems only through `logging`, e.g. "No pretrained weights loaded ... initialized
randomly"), embeds a fixed synthetic image, and checks dimension, finiteness, unit norm and, where one
was recorded for these exact weights, the reference vector. Then it sends encoded probe photos
through the production decode path with the configured settings and holds their vectors to the
product's bound against the exact decode of the same files.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from photoembed.clip.contract import ImageEmbedder, LoadedInfo
from photoembed.clip.errors import ModelLoadError
from photoembed.clip.probe import (
    DECODE_TOLERANCE,
    NORM_TOLERANCE,
    PRECISION_TOLERANCE,
    REFERENCE_TOLERANCE,
    decode_probes,
    max_abs_difference,
    probe_image,
)
from photoembed.config import Settings
from photoembed.images import DEVICE_DECODE_MODE, load_rgb
from photoembed.logging import get_logger
from photoembed.models import SUPPORTED_DIMS
from photoembed.photos import decode_limits

log = get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Finding:
    code: str
    message: str


@dataclass
class SelfCheckResult:
    findings: list[Finding] = field(default_factory=list)
    identity: str | None = None
    reference_path: Path | None = None
    recorded: bool = False

    @property
    def ok(self) -> bool:
        return not self.findings


class _RecordingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def reference_path(settings: Settings, loaded: LoadedInfo) -> Path:
    """Keyed by model and weights checksum only: a different activation must not find a new key."""
    return settings.reference_dir / f"{loaded.plan.model_name}-{loaded.weights_sha256}.json"


def _known_false_warning(record: logging.LogRecord, loaded: LoadedInfo | None) -> str | None:
    """A library warning proven not to concern the loaded model (each case is narrow, named and
    logged); any other warning stays a finding."""
    if loaded is None or loaded.plan.backend != "transformers":
        return None
    # only a transformers model gets here; importing its backend earlier would import torch in
    # the ONNX worker
    from photoembed.clip.backends import transformers

    return transformers.known_false_warning(record, getattr(loaded, "model", None))


def load_recording(
    load: Callable[[], T],
    excuse: Callable[[logging.LogRecord, T | None], str | None] | None = None,
    what: str = "the model",
) -> tuple[T | None, list[Finding]]:
    """Run `load` while recording every Python warning and every WARNING-or-worse log record;
    each one (but those `excuse` explains away) is a finding. Used for the CLIP model and for the
    face models alike."""
    findings: list[Finding] = []
    handler = _RecordingHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    loaded: T | None = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                loaded = load()
            except ModelLoadError as exc:
                findings.append(Finding("model_unavailable", str(exc)))
            except Exception as exc:
                findings.append(Finding("model_load_failed", f"{type(exc).__name__}: {exc}"))
    finally:
        root.removeHandler(handler)
    for warning in caught:
        findings.append(
            Finding(
                "load_warning",
                f"{warning.category.__name__} while loading {what}: {warning.message} "
                f"({warning.filename}:{warning.lineno})",
            )
        )
    for record in handler.records:
        excused = excuse(record, loaded) if excuse is not None else None
        if excused is not None:
            log.info("selfcheck.excused", warning=record.getMessage(), reason=excused)
            continue
        findings.append(
            Finding(
                "load_log",
                f"{record.levelname} from {record.name} while loading {what}: "
                f"{record.getMessage()}",
            )
        )
    return loaded, findings


def compare_with_reference(
    path: Path, vector: np.ndarray, identity: str, tolerance: float, fix: str
) -> Finding | None:
    """A `reference_mismatch` finding when the vector recorded in `path` differs from `vector` by
    more than `tolerance` (max abs); nothing when it agrees or none is recorded."""
    if not path.is_file():
        return None
    reference = json.loads(path.read_text())
    expected = np.asarray(reference["vector"], dtype=np.float64)
    diff = max_abs_difference(expected, vector.astype(np.float64))
    if diff <= tolerance:
        return None
    return Finding(
        "reference_mismatch",
        f"the probe vector differs from the reference recorded in {path} for "
        f"{reference.get('model')} by {diff:.2e} (max abs, tolerance {tolerance:.0e}); now "
        f"loaded as {identity}. {fix}",
    )


def record_reference(path: Path, vector: np.ndarray, identity: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": identity, "vector": vector.tolist()}) + "\n")


def run_selfcheck(
    settings: Settings, embedder: ImageEmbedder, *, record: bool = False
) -> SelfCheckResult:
    loaded, findings = load_recording(embedder.load, _known_false_warning)
    result = SelfCheckResult(findings=findings)
    if loaded is None:
        return result
    result.identity = loaded.identity
    vector = embedder.embed_images([probe_image()], exact=True)[0].astype(np.float64)

    if loaded.embed_dim not in SUPPORTED_DIMS or vector.shape != (loaded.embed_dim,):
        findings.append(
            Finding(
                "dimension",
                f"model {loaded.identity} gives {vector.shape[0]}-d vectors (declared "
                f"{loaded.embed_dim}); the database indexes {', '.join(map(str, SUPPORTED_DIMS))}",
            )
        )
    if not np.all(np.isfinite(vector)):
        findings.append(Finding("not_finite", "the probe embedding has NaN or infinite values"))
        return result
    norm = float(np.linalg.norm(vector))
    if abs(norm - 1.0) > NORM_TOLERANCE:
        findings.append(Finding("not_unit_norm", f"the probe embedding has norm {norm:.6f}, not 1"))

    if embedder.precision != "fp32":
        reduced = embedder.embed_images([probe_image()])[0].astype(np.float64)
        moved = max_abs_difference(reduced, vector)
        log.info("selfcheck.precision", precision=embedder.precision, probe_max_abs=moved)
        if moved > PRECISION_TOLERANCE:
            findings.append(
                Finding(
                    "precision",
                    f"CLIP_PRECISION={embedder.precision} moves the probe embedding {moved:.2e} "
                    f"(max abs) from fp32, more than {PRECISION_TOLERANCE:.0e}: at that precision "
                    f"QuickGELU and GELU (about 1e-3 apart) cannot be told apart. Use "
                    f"CLIP_PRECISION=fp16 or fp32.",
                )
            )

    findings.extend(decode_findings(settings, embedder))

    path = reference_path(settings, loaded)
    result.reference_path = path
    if record:
        if findings:  # never record a reference from a model that is already wrong
            return result
        record_reference(path, vector, loaded.identity)
        result.recorded = True
    else:
        mismatch = compare_with_reference(
            path,
            vector,
            loaded.identity,
            REFERENCE_TOLERANCE,
            "Check CLIP_QUICK_GELU and the weights; re-record only if the change is intended.",
        )
        if mismatch is not None:
            findings.append(mismatch)
    return result


def decode_findings(settings: Settings, embedder: ImageEmbedder) -> list[Finding]:
    """Each probe photo through `embed_photo` (the worker's decode, on the device where it decodes
    there) against the exact decode of the same bytes, both at the working precision, so that
    only the decode differs."""
    limits = decode_limits(settings)
    findings = []
    for name, data in decode_probes(limits.draft_side, limits.max_pixels).items():
        served = embedder.embed_photo(data, limits)
        exact, _ = load_rgb(data, replace(limits, draft_side=0))
        reference = embedder.embed_images([exact])[0]
        moved = max_abs_difference(served.vector, reference)
        log.info("selfcheck.decode", probe=name, decode_mode=served.decode_mode, max_abs=moved)
        if moved > DECODE_TOLERANCE:
            fix = (
                "set JPEG_DECODER=pillow"
                if served.decode_mode == DEVICE_DECODE_MODE
                else "set DECODE_DRAFT_SIDE=0 (every photo decoded whole)"
            )
            findings.append(
                Finding(
                    "decode",
                    f"decoding the {name} probe as {served.decode_mode} (DECODE_DRAFT_SIDE="
                    f"{settings.decode_draft_side}, JPEG_DECODER={settings.jpeg_decoder}) moves "
                    f"its vector {moved:.2e} (max abs) from the exact decode, more than the "
                    f"bound of {DECODE_TOLERANCE:.0e}: {fix}.",
                )
            )
    return findings
