"""Where the ONNX towers of the configured weights are, and how they come to be there.

`photoembed model onnx` (a process with torch: `onnx_export`) plans the model exactly as the torch
runtime does, exports both towers next to the weights, checks them against OpenCLIP and writes
`towers-<key>.json` in `<CLIP_CACHE_DIR>/onnx/`, where `key` depends on the settings that choose
the weights only. Everything that runs the towers without torch finds them through that manifest:
the API's queries, and the worker of the CPU image, whose model stage ran the export at build.

Where torch is installed, `prepared_towers` runs that command in a child process (torch stays out
of the caller); where it is not, a missing manifest is a `ModelLoadError` naming what to run, and
listing the exports that are there (a GELU request for QuickGELU weights finds none of its own).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from photoembed.clip.errors import ModelLoadError
from photoembed.config import Settings

MANIFEST_FORMAT = "photoembed-towers/1"
PREPARE_TIMEOUT_S = 30 * 60


@dataclass(frozen=True)
class TowersManifest:
    """What `photoembed model onnx` prepared for one choice of weights: the identity vectors are
    stored under, the image tower, and the text tower (or why there is none); file names within
    the manifest's folder."""

    identity: str
    image_onnx: str
    text_onnx: str | None
    text_error: str | None = None
    format: str = MANIFEST_FORMAT


def onnx_folder(settings: Settings) -> Path:
    """Exports, their sidecars and the manifests: one folder, named relative to one another, so
    that a cache mounted elsewhere (the API's container, say) still finds them."""
    return settings.clip_cache_dir.expanduser().resolve() / "onnx"


def manifest_path(settings: Settings) -> Path:
    """Where the manifest for these settings' weights is: a key of the settings that choose the
    weights, so that it is found without planning the model (which needs OpenCLIP and torch)."""
    chosen = [
        settings.embed_backend,
        settings.clip_model_name,
        str(settings.clip_pretrained),
        str(settings.clip_quick_gelu),
        str(settings.hf_model),
    ]
    key = hashlib.sha256("\n".join(chosen).encode()).hexdigest()[:16]
    return onnx_folder(settings) / f"towers-{key}.json"


def write_manifest(settings: Settings, manifest: TowersManifest) -> Path:
    path = manifest_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    partial.replace(path)
    return path


def _read(path: Path) -> TowersManifest | None:
    try:
        manifest = TowersManifest(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"the towers manifest {path} is not valid: {exc}") from None
    return manifest if manifest.format == MANIFEST_FORMAT else None


def read_manifest(settings: Settings) -> TowersManifest | None:
    path = manifest_path(settings)
    return _read(path) if path.is_file() else None


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def prepare_onnx(settings: Settings) -> Path:
    """Run `photoembed model onnx` in a child process (torch stays out of this one) and return the
    ONNX image tower it prepared. Its log goes to our stderr; its last stdout line names the file."""
    command = [sys.executable, "-m", "photoembed.cli", "model", "onnx"]
    env = {**os.environ, **settings.environment()}
    try:
        done = subprocess.run(
            command,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            timeout=PREPARE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ModelLoadError(
            f"preparing the ONNX image model took over {PREPARE_TIMEOUT_S} s"
        ) from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise ModelLoadError(
            f"preparing the ONNX image model failed (`photoembed model onnx` exited "
            f"{done.returncode}); its log above says why. EMBED_RUNTIME=torch runs without ONNX."
        )
    return Path(json.loads(lines[-1])["onnx"])


def prepared_towers(settings: Settings, *, check_weights: bool = False) -> TowersManifest:
    """The manifest of the configured weights' towers. Where torch is installed, `photoembed model
    onnx` runs first when there is no manifest yet or, with `check_weights` (a worker's start),
    always: it exports on first use and otherwise checks the export against the weights. Without
    torch the manifest must be there already."""
    manifest = read_manifest(settings)
    if manifest is not None and not (check_weights and torch_installed()):
        return manifest
    if not torch_installed():
        raise ModelLoadError(_no_export_here(settings))
    prepare_onnx(settings)
    manifest = read_manifest(settings)
    if manifest is None:
        raise ModelLoadError("`photoembed model onnx` ran but wrote no towers manifest")
    return manifest


def _no_export_here(settings: Settings) -> str:
    folder = onnx_folder(settings)
    found = sorted(
        {m.identity for p in folder.glob("towers-*.json") if (m := _read(p)) is not None}
        if folder.is_dir()
        else set()
    )
    there = (
        f"It holds exports of {', '.join(found)} only: check CLIP_MODEL_NAME, CLIP_PRETRAINED and "
        f"CLIP_QUICK_GELU (auto: the weights' own activation)."
        if found
        else "It holds none."
    )
    return (
        f"no ONNX export of {settings.clip_model_name} ({settings.clip_pretrained}, "
        f"CLIP_QUICK_GELU={settings.clip_quick_gelu}) in {folder}, and torch is not installed "
        f"here to make one. {there} Fix: run `photoembed model onnx` with these settings where "
        f"'photoembed[worker]' is installed (the worker image's model stage does, at build) and "
        f"share CLIP_CACHE_DIR, or run the worker-cuda image."
    )
