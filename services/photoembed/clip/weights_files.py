"""Writing weights files: download into the cache, export a loaded model, or make demo weights.

Every file written here gets its sidecar, so that loading it later knows its activation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import open_clip
import torch

from photoembed.clip.backends.openclip import (
    WeightsMeta,
    embed_dim_of,
    hub_files,
    missing_weights_message,
    plan_model,
    read_sidecar,
    verify_checksum,
)
from photoembed.clip.errors import ModelLoadError, WeightsNotFoundError
from photoembed.clip.model_files import sha256_file, write_sidecar
from photoembed.clip.runtimes.torch_runtime import LoadedModel
from photoembed.config import Settings


def save_state_dict(model: torch.nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
    }
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)


def _write_with_sidecar(
    model: torch.nn.Module, path: Path, model_name: str, tag: str | None, quick_gelu: bool
) -> WeightsMeta:
    save_state_dict(model, path)
    meta = WeightsMeta(
        model_name=model_name,
        pretrained_tag=tag,
        quick_gelu=quick_gelu,
        embed_dim=embed_dim_of(model_name),
        sha256=sha256_file(path),
    )
    write_sidecar(path, meta)
    return meta


def download_weights(settings: Settings) -> tuple[Path, WeightsMeta]:
    """Fill the cache with the configured tag's weights and record their metadata beside them
    (with EMBED_BACKEND=transformers: the HF_MODEL repository, config and tokenizer included)."""
    if settings.embed_backend == "transformers":
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(settings.hf_model, cache_dir=str(settings.clip_cache_dir)))
        weights = next(
            folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).exists()
        )
        meta = WeightsMeta(settings.hf_model, None, False, 0, sha256_file(weights))
        return weights, meta
    plan = plan_model(
        settings.clip_model_name, settings.clip_pretrained, settings.clip_cache_dir, None
    )
    if plan.source == "file" or plan.tag is None:
        raise ModelLoadError(
            f"CLIP_PRETRAINED={settings.clip_pretrained} is a local file; there is nothing to "
            f"download. Set CLIP_PRETRAINED to a pretrained tag (e.g. 'openai') to fill the cache."
        )
    if plan.weights_path is None:
        cfg = open_clip.get_pretrained_cfg(plan.model_name, plan.tag)
        try:
            open_clip.download_pretrained(cfg, cache_dir=str(plan.cache_dir))
        except Exception as exc:
            raise WeightsNotFoundError(
                missing_weights_message(plan.model_name, plan.tag, plan.cache_dir, str(exc))
            ) from None
        plan = plan_model(plan.model_name, plan.tag, plan.cache_dir, None)
    assert plan.weights_path is not None
    meta = WeightsMeta(
        model_name=plan.model_name,
        pretrained_tag=plan.tag,
        quick_gelu=bool(plan.metadata_quick_gelu),
        embed_dim=embed_dim_of(plan.model_name),
        sha256=verify_checksum(plan.weights_path, plan.expected_sha256),
    )
    write_sidecar(plan.weights_path, meta)
    return plan.weights_path, meta


def export_weights(loaded: LoadedModel, path: Path) -> WeightsMeta:
    """Save the loaded model to a file that reloads with the same activation and embeddings."""
    return _write_with_sidecar(
        loaded.model, path, loaded.plan.model_name, loaded.plan.tag, loaded.plan.quick_gelu
    )


def write_random_weights(
    path: Path, model_name: str = "ViT-B-32", *, quick_gelu: bool = True, seed: int = 0
) -> WeightsMeta:
    """Randomly initialised weights of the real architecture: for tests and the offline demo only.
    Their embeddings carry no meaning, and the sidecar's tag says so."""
    torch.manual_seed(seed)
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # OpenCLIP announces "initialized randomly", which is the point
    try:
        model = open_clip.create_model(model_name, pretrained=None, quick_gelu=quick_gelu)
    finally:
        quiet.setLevel(level)
    return _write_with_sidecar(model, path, model_name, "random-init", quick_gelu)


def ensure_random_weights(path: Path, model_name: str = "ViT-B-32") -> WeightsMeta:
    """The demo weights at `path` (QuickGELU, seed 0), written the first time only."""
    meta = read_sidecar(path) if path.is_file() else None
    return meta or write_random_weights(path, model_name, quick_gelu=True, seed=0)


# The revision a seeded cache names: no hub was asked, so there is no real one.
SEEDED_REVISION = "0" * 40


def seed_hf_cache(
    cache_dir: Path, weights: Path, model_name: str = "ViT-B-32", tag: str = "openai"
) -> Path:
    """Lay `weights` out as the Hugging Face cache holds the tag's download (design.md: blob named by
    its sha256, snapshot symlink, refs/main), so the real offline loading path finds it."""
    meta = read_sidecar(weights)
    if meta is None:
        raise ModelLoadError(f"{weights} has no metadata sidecar; write it with this module first")
    repo_id, names = hub_files(model_name, tag)
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    blob = repo / "blobs" / meta.sha256
    snapshot = repo / "snapshots" / SEEDED_REVISION / names[-1]
    blob.parent.mkdir(parents=True, exist_ok=True)
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        os.link(weights, blob)
    if not snapshot.is_symlink():
        snapshot.symlink_to(Path("../../blobs") / meta.sha256)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(SEEDED_REVISION)
    return snapshot
