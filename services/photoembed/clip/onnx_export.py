"""`photoembed model onnx`: export OpenCLIP's image tower to ONNX, once per weights and activation.

The file lands in `<CLIP_CACHE_DIR>/onnx/`, named by model, weights checksum and activation, so new
weights or a different activation never reuse an old export. Before it is kept, the export must
agree with the torch model on the probe image and on random pixels within PARITY_TOLERANCE, and the
numpy preprocessing must give OpenCLIP's pixels; the sidecar records the probe vector, which every
worker start checks again (`onnx_runtime.open_prepared`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from photoembed.clip.backends import plan_for
from photoembed.clip.backends.openclip import verify_checksum
from photoembed.clip.errors import ModelLoadError
from photoembed.clip.model_files import sha256_file, sidecar_path
from photoembed.clip.preprocessing import preprocessing_of
from photoembed.clip.probe import max_abs_difference, probe_image
from photoembed.clip.runtimes.onnx_runtime import (
    PARITY_TOLERANCE,
    OnnxMeta,
    create_session,
    run_session,
)
from photoembed.clip.runtimes.torch_runtime import ClipEmbedder, LoadedModel, select_device
from photoembed.clip.selfcheck import load_recording
from photoembed.config import Settings
from photoembed.logging import get_logger

log = get_logger(__name__)

OPSET = 18


def onnx_path_for(settings: Settings) -> Path:
    """Where the image tower of the configured weights is (or will be) exported."""
    if settings.embed_backend != "open_clip":
        raise ModelLoadError(
            f"EMBED_RUNTIME=onnx runs OpenCLIP image towers; EMBED_BACKEND={settings.embed_backend} "
            f"needs EMBED_RUNTIME=torch"
        )
    device, _ = select_device(settings.clip_device)
    if device != "cpu":
        raise ModelLoadError(
            f"EMBED_RUNTIME=onnx runs on the CPU, but this machine would run the model on "
            f"{device} (CLIP_DEVICE={settings.clip_device}); set EMBED_RUNTIME=torch for the GPU, "
            f"or CLIP_DEVICE=cpu"
        )
    plan = plan_for(settings)
    if plan.weights_path is None:
        raise ModelLoadError(
            f"{plan.model_name} is not downloaded yet: run `photoembed model download`"
        )
    sha256 = verify_checksum(plan.weights_path, plan.expected_sha256)
    return plan.cache_dir / "onnx" / f"{plan.model_name}-{sha256[:16]}-{plan.activation}.onnx"


class _ImageTower(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.model.encode_image(pixels)  # type: ignore[operator]
        return features


def check_exporter() -> None:
    """torch.onnx's exporter needs onnx and onnxscript, which only exporting machines install."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelLoadError(
            f"exporting the image tower to ONNX needs {' and '.join(missing)}: pip install "
            f"'photoembed[onnx-export]' here, or export once where it is installed "
            f"(`photoembed model onnx`) and share CLIP_CACHE_DIR, or set EMBED_RUNTIME=torch"
        )


def export_onnx(embedder: ClipEmbedder, path: Path) -> OnnxMeta:
    """Export, check against the torch model, and only then put the file and its sidecar in place."""
    check_exporter()
    loaded: LoadedModel = embedder.load()
    preprocessing = preprocessing_of(loaded.preprocess)
    probe = probe_image()
    torch_pixels = loaded.preprocess(probe).numpy()
    pixel_diff = max_abs_difference(preprocessing(probe), torch_pixels)
    if pixel_diff > PARITY_TOLERANCE:
        raise ModelLoadError(
            f"numpy preprocessing differs from OpenCLIP's by {pixel_diff:.2e}; not exporting"
        )
    generator = torch.Generator().manual_seed(0)
    check = np.concatenate(
        [torch_pixels[None], torch.randn(3, *torch_pixels.shape, generator=generator).numpy()]
    )
    expected = embedder.embed_pixels(check, exact=True)

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    # onnx_ir logs every initializer it deduplicates at INFO: hundreds of lines of no interest.
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    example = torch.from_numpy(check[:2]).to(loaded.device)
    # The exporter reports progress on stdout, which belongs to our one-line answer.
    with contextlib.redirect_stdout(sys.stderr), torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            _ImageTower(loaded.model).eval(),
            (example,),
            str(partial),
            input_names=["pixels"],
            output_names=["embeddings"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    try:
        actual = run_session(create_session(partial, 1), check)
        diff = max_abs_difference(actual, expected)
        if diff > PARITY_TOLERANCE:
            raise ModelLoadError(
                f"the ONNX export of {loaded.identity} differs from the torch model by {diff:.2e} "
                f"(max abs, tolerance {PARITY_TOLERANCE:.0e}); not using it. Set EMBED_RUNTIME=torch."
            )
        meta = OnnxMeta(
            plan=loaded.plan.describe(),
            identity=loaded.identity,
            weights_sha256=loaded.weights_sha256,
            embed_dim=loaded.embed_dim,
            onnx_sha256=sha256_file(partial),
            preprocessing=asdict(preprocessing),
            probe_vector=[float(v) for v in expected[0]],
            export_parity_max_abs=diff,
        )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    meta.write(path)
    log.info(
        "model.onnx_exported",
        model=loaded.identity,
        onnx=str(path),
        parity_max_abs=diff,
        preprocessing_max_abs=pixel_diff,
    )
    return meta


def ensure_onnx(settings: Settings) -> Path:
    """The ONNX file for the configured weights: reused when it and its sidecar match, else
    exported from a torch model loaded under the self-check's rules (a warning refuses it)."""
    path = onnx_path_for(settings)
    meta = OnnxMeta.read(path) if path.is_file() else None
    if meta is not None and meta.onnx_sha256 == sha256_file(path):
        return path
    if path.exists() or sidecar_path(path).exists():
        log.warning("model.onnx_stale", onnx=str(path), reason="checksum or sidecar mismatch")
    embedder = ClipEmbedder(settings, image_only=True)
    _, findings = load_recording(embedder.load)
    if findings:
        raise ModelLoadError(
            "loading the torch model to export it failed the self-check: "
            + "; ".join(f"[{f.code}] {f.message}" for f in findings)
        )
    export_onnx(embedder, path)
    return path
