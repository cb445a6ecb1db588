"""What is on disk beside a model file, written and read in one place: its checksum, the JSON
sidecar (`<file>.meta.json`) that records what the file is, and the checksum a Hugging Face cache
blob carries in its name."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from huggingface_hub import constants as hf_constants

from photoembed.clip.errors import ModelLoadError

SIDECAR_SUFFIX = ".meta.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

Meta = TypeVar("Meta")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_path(model_file: Path) -> Path:
    return model_file.with_name(model_file.name + SIDECAR_SUFFIX)


def write_sidecar(model_file: Path, meta: Any) -> Path:
    """`meta` is a dataclass; its fields become the sidecar's JSON object."""
    path = sidecar_path(model_file)
    path.write_text(json.dumps(asdict(meta), indent=2) + "\n")
    return path


def read_sidecar(model_file: Path, meta_type: type[Meta], what: str) -> Meta | None:
    """The sidecar as `meta_type`, None when there is none; a sidecar that does not parse is a
    `ModelLoadError` naming `what` it describes."""
    path = sidecar_path(model_file)
    if not path.is_file():
        return None
    try:
        return meta_type(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"{what} metadata {path} is not valid: {exc}") from None


def blob_sha256(path: Path) -> str | None:
    """Hugging Face stores large files as blobs named by their sha256 (the files a snapshot shows
    are links to them): the checksum the file must have, or None for a file that is not a blob."""
    name = path.resolve().name
    return name if _SHA256.fullmatch(name) else None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE=1: nothing may be fetched from the model hub."""
    return bool(hf_constants.HF_HUB_OFFLINE)
