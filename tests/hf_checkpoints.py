"""Hugging Face checkpoints for the transformers backend, made here (no hub): our OpenCLIP ViT-B-32
weights converted to a `CLIPModel` folder, and SigLIP / SigLIP2 folders with published configs."""

from __future__ import annotations

from pathlib import Path

import torch


def _split_attention(
    state: dict[str, torch.Tensor], source: str, target: str, out: dict[str, torch.Tensor]
) -> None:
    for kind in ("weight", "bias"):
        q, k, v = state[f"{source}.attn.in_proj_{kind}"].chunk(3)
        out[f"{target}.self_attn.q_proj.{kind}"] = q
        out[f"{target}.self_attn.k_proj.{kind}"] = k
        out[f"{target}.self_attn.v_proj.{kind}"] = v
        out[f"{target}.self_attn.out_proj.{kind}"] = state[f"{source}.attn.out_proj.{kind}"]
        out[f"{target}.layer_norm1.{kind}"] = state[f"{source}.ln_1.{kind}"]
        out[f"{target}.layer_norm2.{kind}"] = state[f"{source}.ln_2.{kind}"]
        out[f"{target}.mlp.fc1.{kind}"] = state[f"{source}.mlp.c_fc.{kind}"]
        out[f"{target}.mlp.fc2.{kind}"] = state[f"{source}.mlp.c_proj.{kind}"]


def openclip_to_hf_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {
        "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
        "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
        "visual_projection.weight": state["visual.proj"].T.contiguous(),
        "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
        "text_projection.weight": state["text_projection"].T.contiguous(),
        "logit_scale": state["logit_scale"],
    }
    for kind in ("weight", "bias"):
        out[f"vision_model.pre_layrnorm.{kind}"] = state[f"visual.ln_pre.{kind}"]
        out[f"vision_model.post_layernorm.{kind}"] = state[f"visual.ln_post.{kind}"]
        out[f"text_model.final_layer_norm.{kind}"] = state[f"ln_final.{kind}"]
    for i in range(12):
        _split_attention(
            state, f"visual.transformer.resblocks.{i}", f"vision_model.encoder.layers.{i}", out
        )
        _split_attention(state, f"transformer.resblocks.{i}", f"text_model.encoder.layers.{i}", out)
    return out


def write_hf_clip(openclip_weights: Path, folder: Path, *, drop_text: bool = False) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    state = openclip_to_hf_clip(torch.load(openclip_weights, weights_only=True))
    model = CLIPModel(CLIPConfig())
    model.load_state_dict(state, strict=False)
    missing = set(model.state_dict()) - set(state)
    assert missing <= {
        "text_model.embeddings.position_ids",
        "vision_model.embeddings.position_ids",
    }, missing
    if drop_text:  # a checkpoint that loads with "newly initialized" weights
        model.save_pretrained(
            folder,
            state_dict={k: v for k, v in model.state_dict().items() if not k.startswith("text_")},
        )
    else:
        model.save_pretrained(folder)
    CLIPImageProcessor().save_pretrained(folder)
    return folder


def write_hf_clip_768(folder: Path, seed: int = 0) -> Path:
    """A CLIP B/32 whose projection is 768-d (random weights): vectors of another dimension."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(projection_dim=768)).save_pretrained(folder)
    CLIPImageProcessor().save_pretrained(folder)
    return folder


def write_hf_siglip(folder: Path, seed: int = 0) -> Path:
    """google/siglip-base-patch16-224's published config (text vocabulary 32000 and no token ids,
    so SiglipTextConfig's defaults bos 49406 / eos 49407 apply and lie outside it), random weights.
    transformers warns about those ids on load, truly for this checkpoint."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(seed)
    config = SiglipConfig(text_config={"vocab_size": 32000}, vision_config={})
    SiglipModel(config).save_pretrained(folder)
    SiglipImageProcessor().save_pretrained(folder)
    return folder


def write_hf_siglip2_base(folder: Path, seed: int = 0) -> Path:
    """google/siglip2-base-patch16-224 as published (config.json: model_type "siglip", text vocabulary
    256000, default B/16 towers at 224 px; SiglipImageProcessor's defaults), random weights. Its
    Gemma tokenizer ships with no installed package, so the folder has none."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(seed)
    config = SiglipConfig(text_config={"vocab_size": 256000}, vision_config={})
    SiglipModel(config).save_pretrained(folder)
    SiglipImageProcessor().save_pretrained(folder)
    return folder
