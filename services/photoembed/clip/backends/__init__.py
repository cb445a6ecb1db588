"""Backends decide what to load and build it: OpenCLIP (`openclip`) and Hugging Face
transformers (`transformers`). `plan_for` picks the configured one."""

from __future__ import annotations

from photoembed.clip.backends import openclip, transformers
from photoembed.clip.contract import ModelPlan
from photoembed.clip.errors import WeightsNotFoundError
from photoembed.config import Settings


def plan_for(settings: Settings) -> ModelPlan:
    """What the configured backend would load, from where, with which activation."""
    if settings.embed_backend == "transformers":
        return transformers.plan_transformers(
            settings.hf_model, settings.clip_cache_dir, settings.quick_gelu_override
        )
    return openclip.plan_model(
        settings.clip_model_name,
        settings.clip_pretrained,
        settings.clip_cache_dir,
        settings.quick_gelu_override,
    )


def active_identity(settings: Settings) -> str:
    """The identity vectors of the configured model carry, without loading it (hashes a weights
    file only when no checksum is recorded for it)."""
    plan = plan_for(settings)
    if plan.weights_path is None:
        raise WeightsNotFoundError(f"{plan.model_name} is not downloaded yet")
    return plan.identity(plan.expected_sha256 or openclip.verify_checksum(plan.weights_path, None))
