"""The second backend: Hugging Face transformers (`AutoModel` + `AutoImageProcessor`).

`EMBED_BACKEND=transformers` with `HF_MODEL` = a hub id (e.g. `openai/clip-vit-base-patch32`,
`google/siglip2-base-patch16-224`) or a local folder written by `save_pretrained`. Same rules as
the OpenCLIP path: local first (a folder, then `CLIP_CACHE_DIR`, then the hub only without
`HF_HUB_OFFLINE=1`), the activation read from the checkpoint's own config (CLIP's is
`quick_gelu`), the weights' sha256 in the model identity, and the same boot self-check. Models whose
processor yields only `pixel_values` are supported (CLIP, SigLIP and SigLIP2's fixed-resolution
checkpoints); SigLIP2's NaFlex checkpoints need masks and shapes per image and are refused.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import try_to_load_from_cache
from PIL import Image

from photoembed.clip.contract import ModelPlan
from photoembed.clip.errors import ModelLoadError, UnknownModelError, WeightsNotFoundError
from photoembed.clip.model_files import blob_sha256, hub_offline

BACKEND = "transformers"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def route_library_logs() -> None:
    """transformers prints through a handler of its own that does not propagate: send its records
    to the root logger, where our renderer and the self-check's recorder see them."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()


# transformers 5.x validates throwaway default configs while it loads a SigLIP checkpoint, and warns
# that SiglipTextConfig's class defaults (bos 49406, eos 49407) lie outside *their* default
# vocabulary (32000), whatever the checkpoint holds (huggingface/transformers#47612).
_TOKEN_ID_WARNING = re.compile(
    r"Model config: \w+_token_id must be `None` or an integer within the vocabulary "
    r"\(between 0 and \d+\), got -?\d+\."
)


def known_false_warning(record: logging.LogRecord, model: object) -> str | None:
    """Why a load warning does not concern this checkpoint, when that is provably so; else None.
    Only the token-id warning above qualifies, and only when every special token id of the
    loaded text config lies within its own vocabulary (what the warning claims is not)."""
    if record.name != "transformers.configuration_utils" or not isinstance(
        model, TransformersImageModel
    ):
        return None
    if not _TOKEN_ID_WARNING.match(record.getMessage()):
        return None
    text_config: Any = getattr(model.inner.config, "text_config", None)
    vocab_size = getattr(text_config, "vocab_size", None)
    if not isinstance(vocab_size, int):
        return None
    out_of_range = [
        name
        for name, value in vars(text_config).items()
        if name.endswith("_token_id") and isinstance(value, int) and not 0 <= value < vocab_size
    ]
    if out_of_range:
        return None
    return (
        f"transformers#47612: raised for a default config built during loading; this "
        f"checkpoint's special token ids all lie within its vocabulary of {vocab_size}"
    )


def _config_of(folder: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((folder / "config.json").read_text())
    return config


def _folder_for(model: str, cache_dir: Path) -> tuple[Path, str] | None:
    """A local folder holding the checkpoint, and where it came from ('file' or 'cache')."""
    local = Path(model).expanduser()
    if (local / "config.json").is_file():
        return local.resolve(), "file"
    found: object = try_to_load_from_cache(model, "config.json", cache_dir=str(cache_dir))
    if isinstance(found, str):
        return Path(str(found)).parent, "cache"
    return None


def plan_transformers(model: str, cache_dir: Path, quick_gelu_override: bool | None) -> ModelPlan:
    cache_dir = cache_dir.expanduser().resolve()
    located = _folder_for(model, cache_dir)
    if located is None:
        if hub_offline():
            raise WeightsNotFoundError(
                f"transformers model {model!r} (HF_MODEL) is neither a local folder with a "
                f"config.json nor in the cache {cache_dir}, and HF_HUB_OFFLINE=1. Fix: run "
                f"`photoembed model download` with EMBED_BACKEND=transformers on a machine with "
                f"internet access and bring CLIP_CACHE_DIR here, or set HF_MODEL=/path/to/folder."
            )
        source, folder, weights = "hub", None, None
        activation: str | None = None
    else:
        folder, source = located
        weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
        if weights is None:
            raise WeightsNotFoundError(
                f"{folder} has a config.json but no {' or '.join(WEIGHT_FILES)}"
            )
        config = _config_of(folder)
        activation = config.get("vision_config", {}).get("hidden_act")
    recorded_quick_gelu = None if activation is None else activation == "quick_gelu"
    quick_gelu = (
        quick_gelu_override if quick_gelu_override is not None else bool(recorded_quick_gelu)
    )
    return ModelPlan(
        model_name=model,
        pretrained=str(folder or model),
        tag=None,
        source=source,  # type: ignore[arg-type]
        weights_path=weights,
        quick_gelu=quick_gelu,
        activation_source=f"config.json vision_config.hidden_act={activation}",
        expected_sha256=blob_sha256(weights) if weights is not None else None,
        metadata_quick_gelu=recorded_quick_gelu,
        cache_dir=cache_dir,
        backend=BACKEND,
    )


class TransformersImageModel(torch.nn.Module):
    """A transformers vision-language model behind the two calls the service makes."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model

    @staticmethod
    def _features(output: Any) -> torch.Tensor:
        # transformers 5 returns an output object whose pooler_output is the projected feature.
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._features(self.inner.get_image_features(pixel_values=pixel_values))  # type: ignore[operator]

    @property
    def text_vocab_size(self) -> int:
        config: Any = self.inner.config
        return int(config.text_config.vocab_size)

    def encode_text(self, **tokens: torch.Tensor) -> torch.Tensor:
        return self._features(self.inner.get_text_features(**tokens))  # type: ignore[operator]


def load_transformers(
    plan: ModelPlan, device: str
) -> tuple[TransformersImageModel, Callable[[Image.Image], torch.Tensor], int]:
    from transformers import AutoImageProcessor, AutoModel

    route_library_logs()
    if plan.metadata_quick_gelu is not None and plan.metadata_quick_gelu != plan.quick_gelu:
        raise ModelLoadError(
            f"CLIP_QUICK_GELU={str(plan.quick_gelu).lower()} contradicts {plan.model_name}'s "
            f"config ({plan.activation_source}); transformers builds the activation the config "
            f"names. Fix: set CLIP_QUICK_GELU=auto."
        )
    source = plan.pretrained if plan.source != "hub" else plan.model_name
    options: dict[str, Any] = {
        "cache_dir": str(plan.cache_dir),
        "local_files_only": plan.source != "hub",
    }
    model = AutoModel.from_pretrained(source, **options).to(device).eval()
    processor = AutoImageProcessor.from_pretrained(source, **options)
    if "siglip2" in type(model).__name__.lower():
        raise UnknownModelError(
            f"{plan.model_name} is a SigLIP2 NaFlex checkpoint (per-image masks and shapes); use a "
            f"fixed-resolution checkpoint such as google/siglip2-base-patch16-224"
        )

    def preprocess(image: Image.Image) -> torch.Tensor:
        pixels: torch.Tensor = processor(images=image, return_tensors="pt")["pixel_values"][0]
        return pixels

    config = model.config
    embed_dim = int(getattr(config, "projection_dim", 0) or config.vision_config.hidden_size)
    return TransformersImageModel(model), preprocess, embed_dim


@functools.cache
def _tokenizer(plan: ModelPlan, vocab_size: int) -> Any:
    from transformers import AutoTokenizer

    missing = (
        f"Text search needs the checkpoint's tokenizer: run `photoembed model download` where the "
        f"hub is reachable, or add the tokenizer files to {plan.pretrained}."
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            plan.pretrained, cache_dir=str(plan.cache_dir), local_files_only=plan.source != "hub"
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"the text tokenizer of {plan.model_name} is not available ({exc}). {missing}"
        ) from None
    # With no tokenizer files transformers 5 quietly builds an empty one (2 tokens): every text
    # would become unknown tokens and a meaningless vector. Refuse a tokenizer that is not the
    # model's.
    if len(tokenizer) < 0.9 * vocab_size:
        raise ModelLoadError(
            f"the text tokenizer found for {plan.model_name} has {len(tokenizer)} tokens, the "
            f"model's text tower {vocab_size}: it is not this model's tokenizer. {missing}"
        )
    return tokenizer


def tokenize(plan: ModelPlan, texts: Sequence[str], vocab_size: int) -> dict[str, torch.Tensor]:
    """The checkpoint's own tokenizer; absent or wrong, say what is missing."""
    tokenizer = _tokenizer(plan, vocab_size)
    batch = tokenizer(list(texts), padding="max_length", truncation=True, return_tensors="pt")
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
