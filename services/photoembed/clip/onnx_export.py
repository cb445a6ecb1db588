"""`photoembed model onnx`: export OpenCLIP's image and text towers to ONNX, once per weights and
activation, and write the manifest that everything torch-free reads (`towers`).

The file lands in `<CLIP_CACHE_DIR>/onnx/`, named by model, weights checksum and activation, so new
weights or a different activation never reuse an old export. Before it is kept, the export must
agree with the torch model on the probe image and on random pixels within PARITY_TOLERANCE, and the
numpy preprocessing must give OpenCLIP's pixels; the sidecar records the probe vector, which every
worker start checks again (`onnx_runtime.open_prepared`). The text tower must agree with OpenCLIP's
`encode_text` within TEXT_PARITY_TOLERANCE on TEXT_PROBES, through a tokenizer that gives OpenCLIP's
tokens for every one of them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
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
    normalise,
    run_session,
)
from photoembed.clip.runtimes.onnx_text import TEXT_PARITY_TOLERANCE, OnnxTextMeta, text_onnx_path
from photoembed.clip.runtimes.torch_runtime import ClipEmbedder, LoadedModel, select_device
from photoembed.clip.runtimes.towers import TowersManifest, write_manifest
from photoembed.clip.selfcheck import load_recording
from photoembed.clip.tokenizer import ClipTokenizer
from photoembed.config import Settings
from photoembed.logging import get_logger

log = get_logger(__name__)

OPSET = 18
# Texts the text tower and the tokenizer are checked on: plain, blank, punctuation only, accents,
# CJK, emoji, HTML entities, contractions and numbers, and one longer than the context.
TEXT_PROBES = [
    "a photo of a person",
    "",
    "   ",
    "!!!",
    "Zoë's café — naïve façade",
    "北京的一个人在公园里",
    "emoji 🙂👍🏽 at the beach",
    "HTML &amp; entities &lt;b&gt;",
    "It's 12:30, they've 3 dogs",
    "a very long caption " * 40,
]


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


class _Tower(torch.nn.Module):
    """One tower of the model as a module of its own: `encode` is `encode_image` or
    `encode_text`."""

    def __init__(self, model: torch.nn.Module, encode: str) -> None:
        super().__init__()
        self.model = model
        self.encode = encode

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = getattr(self.model, self.encode)(inputs)
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


def _export(tower: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str) -> Path:
    """torch.onnx's exporter into `<path>.partial` (batch dimension dynamic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    # onnx_ir logs every initializer it deduplicates at INFO, onnxscript each rewrite: hundreds of
    # lines of no interest.
    for name in ("onnx_ir", "onnxscript"):
        logging.getLogger(name).setLevel(logging.WARNING)
    device = next(tower.parameters()).device
    # The exporter reports progress on stdout, which belongs to our one-line answer.
    with contextlib.redirect_stdout(sys.stderr), torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            tower.eval(),
            (example.to(device),),
            str(partial),
            input_names=[input_name],
            output_names=["embeddings"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return partial


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

    partial = _export(
        _Tower(loaded.model, "encode_image"), torch.from_numpy(check[:2]), path, "pixels"
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


def tokenizer_merges(model_name: str) -> Path:
    """The merges file of OpenCLIP's tokenizer for `model_name`, once ours gives the same tokens
    on every probe text; a model with another kind of tokenizer has no torch-free text search."""
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    theirs = open_clip.get_tokenizer(model_name)
    plain = (
        isinstance(theirs, SimpleTokenizer)
        and theirs.reduction_fn is None
        and theirs.clean_fn.__name__ == "_clean_lower"
    )
    if not plain:
        raise ModelLoadError(
            f"{model_name} uses a tokenizer ({type(theirs).__name__}) that photoembed does not run "
            f"without torch; text search for it needs the torch runtime"
        )
    merges = Path(default_bpe())
    ours = ClipTokenizer(merges, theirs.context_length)
    if not np.array_equal(ours(TEXT_PROBES), theirs(TEXT_PROBES).numpy()):
        raise ModelLoadError(f"the torch-free tokenizer disagrees with OpenCLIP's for {model_name}")
    return merges


def export_text_onnx(embedder: ClipEmbedder, path: Path) -> OnnxTextMeta:
    """The text tower, exported and checked like the image tower, with the tokenizer's merges
    file copied beside it."""
    check_exporter()
    loaded = embedder.load()
    if loaded.plan.backend != "open_clip":
        raise ModelLoadError(
            f"the text tower is exported for OpenCLIP models; EMBED_BACKEND={loaded.plan.backend} "
            f"answers text queries in torch"
        )
    merges = tokenizer_merges(loaded.plan.model_name)
    tokenizer = ClipTokenizer(merges)
    tokens = tokenizer(TEXT_PROBES)
    expected = embedder.embed_texts(TEXT_PROBES)
    partial = _export(
        _Tower(loaded.model, "encode_text"), torch.from_numpy(tokens[:2]), path, "tokens"
    )
    try:
        (features,) = create_session(partial, 1).run(None, {"tokens": tokens})
        diff = max_abs_difference(normalise(features), expected)
        if diff > TEXT_PARITY_TOLERANCE:
            raise ModelLoadError(
                f"the ONNX text tower of {loaded.identity} differs from OpenCLIP's encode_text by "
                f"{diff:.2e} (max abs, tolerance {TEXT_PARITY_TOLERANCE:.0e}); not using it"
            )
        merges_copy = path.parent / merges.name
        shutil.copyfile(merges, merges_copy)
        meta = OnnxTextMeta(
            identity=loaded.identity,
            weights_sha256=loaded.weights_sha256,
            embed_dim=loaded.embed_dim,
            onnx_sha256=sha256_file(partial),
            merges_file=merges_copy.name,
            merges_sha256=sha256_file(merges_copy),
            context_length=tokenizer.context_length,
            probe_texts=TEXT_PROBES,
            probe_vectors=[[float(v) for v in row] for row in expected],
            export_parity_max_abs=diff,
        )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    meta.write(path)
    log.info("model.onnx_text_exported", model=loaded.identity, onnx=str(path), parity_max_abs=diff)
    return meta


def _current(path: Path, meta_type: type[OnnxMeta] | type[OnnxTextMeta]) -> bool:
    """An export is reused when its sidecar describes the file beside it."""
    meta = meta_type.read(path) if path.is_file() else None
    if meta is not None and meta.onnx_sha256 == sha256_file(path):
        return True
    if path.exists() or sidecar_path(path).exists():
        log.warning("model.onnx_stale", onnx=str(path), reason="checksum or sidecar mismatch")
    return False


def ensure_onnx(settings: Settings) -> Path:
    """The ONNX image tower for the configured weights, and the text tower beside it: reused when
    they and their sidecars match, else exported from a torch model loaded under the self-check's
    rules (a warning refuses it); then the towers manifest (`towers`) names both. A text tower
    that cannot be exported does not stop the image tower: the manifest says why."""
    path = onnx_path_for(settings)
    text_path = text_onnx_path(path)
    need_image = not _current(path, OnnxMeta)
    need_text = not _current(text_path, OnnxTextMeta)
    text_error = None
    if need_image or need_text:
        embedder = ClipEmbedder(settings, image_only=not need_text)
        _, findings = load_recording(embedder.load)
        if findings:
            raise ModelLoadError(
                "loading the torch model to export it failed the self-check: "
                + "; ".join(f"[{f.code}] {f.message}" for f in findings)
            )
        if need_image:
            export_onnx(embedder, path)
        if need_text:
            try:
                export_text_onnx(embedder, text_path)
            except ModelLoadError as exc:
                text_error = str(exc)
                log.warning("model.onnx_text_unavailable", error=text_error)
    meta = OnnxMeta.read(path)
    assert meta is not None
    write_manifest(
        settings,
        TowersManifest(
            identity=meta.identity,
            image_onnx=path.name,
            text_onnx=text_path.name if text_error is None else None,
            text_error=text_error,
        ),
    )
    return path
