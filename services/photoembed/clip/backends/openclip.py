"""Where the CLIP weights come from, which activation they need, and whether the file is intact.

`plan_model` answers all of that without loading anything (`photoembed model info` prints it);
`ClipEmbedder` loads what the plan names. The order is local first: a configured file, then the
cache, then the hub only where it is allowed (not with `HF_HUB_OFFLINE=1`).

QuickGELU: OpenAI's weights (and every OpenCLIP tag whose metadata says `quick_gelu=True`) were
trained with QuickGELU, while OpenCLIP builds e.g. `ViT-B-32` with nn.GELU. For a tag the activation
comes from that metadata; for a weights file from its sidecar (`<file>.meta.json`, written by
`photoembed model download` / `model export`), because OpenCLIP runs no check at all for a file.
`CLIP_QUICK_GELU=true|false` overrides both; a file with neither is refused.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
from huggingface_hub import try_to_load_from_cache
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

from photoembed.clip import model_files
from photoembed.clip.contract import ModelPlan
from photoembed.clip.errors import (
    ActivationUnknownError,
    ModelLoadError,
    UnknownModelError,
    WeightsCorruptError,
    WeightsNotFoundError,
)
from photoembed.clip.model_files import (
    SIDECAR_SUFFIX,
    blob_sha256,
    hub_offline,
    sha256_file,
    sidecar_path,
)

SIDECAR_FORMAT = "photoembed-weights/1"
WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors")


@dataclass(frozen=True)
class WeightsMeta:
    """The sidecar written next to a weights file: what it is and how it must be built."""

    model_name: str
    pretrained_tag: str | None
    quick_gelu: bool
    embed_dim: int
    sha256: str
    format: str = SIDECAR_FORMAT


def read_sidecar(weights: Path) -> WeightsMeta | None:
    return model_files.read_sidecar(weights, WeightsMeta, "weights")


def looks_like_path(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.endswith(WEIGHT_SUFFIXES) or Path(pretrained).exists()


def embed_dim_of(model_name: str) -> int:
    config = open_clip.get_model_config(model_name)
    if config is None:
        raise UnknownModelError(_unknown_model_message(model_name))
    return int(config["embed_dim"])


def _unknown_model_message(model_name: str) -> str:
    known = ", ".join(m for m in open_clip.list_models() if m.startswith("ViT-B"))
    return f"unknown OpenCLIP model {model_name!r} (CLIP_MODEL_NAME); for example: {known}"


def hub_files(model_name: str, tag: str) -> tuple[str, list[str]]:
    """The Hugging Face repo and the file names OpenCLIP would fetch for a tag, in its order."""
    hf_hub = open_clip.get_pretrained_cfg(model_name, tag).get("hf_hub", "")
    if not hf_hub:
        return "", []
    repo_id, filename = os.path.split(hf_hub)  # 'org/name/' or 'org/name/file.bin'
    filename = filename or HF_WEIGHTS_NAME
    if filename == HF_WEIGHTS_NAME:
        return repo_id, [HF_SAFE_WEIGHTS_NAME, filename]
    if filename.endswith((".bin", ".pth")):
        return repo_id, [filename[:-4] + ".safetensors", filename]
    return repo_id, [filename]


def _find_in_cache(model_name: str, tag: str, cache_dir: Path) -> Path | None:
    repo_id, names = hub_files(model_name, tag)
    for name in names:
        found: object = try_to_load_from_cache(repo_id, name, cache_dir=str(cache_dir))
        if isinstance(found, str):
            return Path(str(found))
    url: str = open_clip.get_pretrained_cfg(model_name, tag).get("url", "")
    if url:
        candidate = cache_dir / url.rsplit("/", 1)[-1]
        if candidate.is_file():
            return candidate
    return None


def missing_weights_message(model_name: str, tag: str, cache_dir: Path, reason: str) -> str:
    repo_id, names = hub_files(model_name, tag)
    where = (
        f"{cache_dir}/models--{repo_id.replace('/', '--')} (files {', '.join(names)})"
        if repo_id
        else str(cache_dir)
    )
    return (
        f"weights for model {model_name!r} with pretrained tag {tag!r} are not available: {reason}. "
        f"Looked in {where}. Fix it one of two ways: run `photoembed model download` on a machine "
        f"with internet access, with the same CLIP_MODEL_NAME, CLIP_PRETRAINED and CLIP_CACHE_DIR, "
        f"and bring that cache folder here; or set CLIP_PRETRAINED=/path/to/weights.bin, a local "
        f"weights file with its {SIDECAR_SUFFIX} sidecar (or CLIP_QUICK_GELU set)."
    )


def tag_trained_with_quick_gelu(model_name: str, tag: str) -> bool:
    """What OpenCLIP's pretrained metadata says the tag was trained with (any tag, not only openai)."""
    return bool(open_clip.get_pretrained_cfg(model_name, tag).get("quick_gelu", False))


def plan_model(
    model_name: str, pretrained: str, cache_dir: Path, quick_gelu_override: bool | None
) -> ModelPlan:
    """Decide what would be loaded, from where, with which activation, without loading it."""
    if open_clip.get_model_config(model_name) is None:
        raise UnknownModelError(_unknown_model_message(model_name))
    cache_dir = cache_dir.expanduser().resolve()

    if looks_like_path(pretrained):
        path = Path(pretrained).expanduser().resolve()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"CLIP_PRETRAINED names the weights file {path}, which does not exist. Fix: point "
                f"it at a file written by `photoembed model download` or `photoembed model export`, "
                f"or set CLIP_PRETRAINED to a pretrained tag such as 'openai'."
            )
        meta = read_sidecar(path)
        if quick_gelu_override is not None:
            quick_gelu, activation_source = quick_gelu_override, "CLIP_QUICK_GELU"
        elif meta is not None:
            quick_gelu, activation_source = meta.quick_gelu, f"sidecar {sidecar_path(path)}"
        else:
            raise ActivationUnknownError(
                f"the weights file {path} has no metadata sidecar ({sidecar_path(path).name}), so "
                f"its activation (QuickGELU or GELU) is unknown and OpenCLIP would not check it. "
                f"Fix: set CLIP_QUICK_GELU=true (OpenAI-trained weights) or CLIP_QUICK_GELU=false, "
                f"or re-export the file with `photoembed model export`, which writes the sidecar."
            )
        return ModelPlan(
            model_name=model_name,
            pretrained=pretrained,
            tag=meta.pretrained_tag if meta else None,
            source="file",
            weights_path=path,
            quick_gelu=quick_gelu,
            activation_source=activation_source,
            expected_sha256=meta.sha256 if meta else None,
            metadata_quick_gelu=meta.quick_gelu if meta else None,
            cache_dir=cache_dir,
        )

    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
        raise UnknownModelError(
            f"{pretrained!r} is neither a pretrained tag of {model_name} nor an existing file "
            f"(CLIP_PRETRAINED). Tags for {model_name}: {tags}"
        )
    tag_quick_gelu = tag_trained_with_quick_gelu(model_name, pretrained)
    if quick_gelu_override is not None:
        quick_gelu, activation_source = quick_gelu_override, "CLIP_QUICK_GELU"
    else:
        quick_gelu, activation_source = tag_quick_gelu, f"OpenCLIP metadata of tag {pretrained!r}"

    cached = _find_in_cache(model_name, pretrained, cache_dir)
    if cached is None and hub_offline():
        raise WeightsNotFoundError(
            missing_weights_message(
                model_name, pretrained, cache_dir, "not in the cache, and HF_HUB_OFFLINE=1"
            )
        )
    return ModelPlan(
        model_name=model_name,
        pretrained=pretrained,
        tag=pretrained,
        source="cache" if cached else "hub",
        weights_path=cached,
        quick_gelu=quick_gelu,
        activation_source=activation_source,
        expected_sha256=blob_sha256(cached) if cached else None,
        metadata_quick_gelu=tag_quick_gelu,
        cache_dir=cache_dir,
    )


def verify_checksum(path: Path, expected: str | None) -> str:
    """Hash the weights; a mismatch is reported, never 'fixed' by deleting the file."""
    actual = sha256_file(path)
    if expected and actual != expected:
        raise WeightsCorruptError(
            f"weights file {path} is corrupt or partial: sha256 {actual}, expected {expected} "
            f"({path.stat().st_size} bytes on disk). It was left in place for inspection. Fix: "
            f"delete it and run `photoembed model download` again, or restore a good copy."
        )
    return actual


def _check_activation(plan: ModelPlan) -> None:
    """OpenCLIP compares the built activation with a tag's metadata only when it downloads the tag
    itself; for a local file (ours or a cached tag) it checks nothing, so we warn the same way. The
    self-check turns any such warning into a refusal to start."""
    if plan.metadata_quick_gelu is None or plan.metadata_quick_gelu == plan.quick_gelu:
        return
    origin = (
        f"pretrained tag {plan.tag!r}"
        if plan.source == "cache"
        else f"the metadata of weights file {plan.weights_path}"
    )
    warnings.warn(
        f"QuickGELU mismatch between final model config (quick_gelu={plan.quick_gelu}) "
        f"and {origin} (quick_gelu={plan.metadata_quick_gelu}).",
        UserWarning,
        stacklevel=3,
    )


def _build(plan: ModelPlan, device: str) -> tuple[Any, Any]:
    """Local weights load by path, so a cached tag never waits on the hub (HEAD retries with
    warnings when offline); only a tag that is not cached yet goes through OpenCLIP's download."""
    extra: dict[str, Any] = {}
    if plan.weights_path is not None:
        _check_activation(plan)
        cfg = open_clip.get_pretrained_cfg(plan.model_name, plan.tag) if plan.tag else {}
        extra = {
            "image_mean": cfg.get("mean"),
            "image_std": cfg.get("std"),
            "image_interpolation": cfg.get("interpolation"),
            "image_resize_mode": cfg.get("resize_mode"),
        }
    model, _, preprocess = open_clip.create_model_and_transforms(
        plan.model_name,
        pretrained=str(plan.weights_path) if plan.weights_path else plan.pretrained,
        device=device,
        cache_dir=str(plan.cache_dir),
        force_quick_gelu=plan.quick_gelu,
        # Also when False: a '-quickgelu' model name must not silently keep QuickGELU.
        quick_gelu=plan.quick_gelu,
        **extra,
    )
    return model, preprocess


def build_openclip(plan: ModelPlan, device: str) -> tuple[Any, Any, int]:
    """The model the plan names, on `device`, in eval mode: (model, preprocess, embedding size)."""
    try:
        model, preprocess = _build(plan, device)
    except RuntimeError as exc:
        if plan.tag and "Failed to download weights" in str(exc):
            raise WeightsNotFoundError(
                missing_weights_message(plan.model_name, plan.tag, plan.cache_dir, str(exc))
            ) from None
        raise _unreadable(plan, exc) from None
    except (OSError, EOFError, ValueError) as exc:
        raise _unreadable(plan, exc) from None
    model.eval()
    return model, preprocess, int(model.visual.output_dim)


def _unreadable(plan: ModelPlan, exc: BaseException) -> ModelLoadError:
    return WeightsCorruptError(
        f"weights file {plan.weights_path} could not be loaded into {plan.model_name}: "
        f"{type(exc).__name__}: {str(exc)[:300]}. The file is probably truncated, corrupt or for "
        f"another model (expected sha256: {plan.expected_sha256 or 'not recorded'}). It was left "
        f"in place. Fix: delete it and run `photoembed model download` again, or point "
        f"CLIP_PRETRAINED at a good copy."
    )
