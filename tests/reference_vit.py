"""An independent ViT-B/32 image tower: plain torch ops on the state dict, no OpenCLIP modules.

It exists to check that the service builds the model the weights were trained for. Computed in
float64 so that its own rounding is far below the GELU/QuickGELU difference (~1e-3 max abs).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def quick_gelu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(1.702 * x)


def gelu(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / 2.0**0.5))


def encode_image(
    state: dict[str, Tensor],
    pixels: Tensor,
    activation: Callable[[Tensor], Tensor],
    heads: int = 12,
) -> Tensor:
    p = {k[len("visual.") :]: v.double() for k, v in state.items() if k.startswith("visual.")}
    x = pixels.double()
    batch = x.shape[0]
    width = p["conv1.weight"].shape[0]
    patch = p["conv1.weight"].shape[-1]

    def norm(h: Tensor, name: str) -> Tensor:
        return F.layer_norm(h, (width,), p[f"{name}.weight"], p[f"{name}.bias"], eps=1e-5)

    tokens = F.conv2d(x, p["conv1.weight"], stride=patch).flatten(2).transpose(1, 2)
    cls = p["class_embedding"].expand(batch, 1, width)
    h = torch.cat([cls, tokens], dim=1) + p["positional_embedding"]
    h = norm(h, "ln_pre")
    layers = len({k.split(".")[2] for k in p if k.startswith("transformer.resblocks.")})
    head_dim = width // heads
    for i in range(layers):
        b = f"transformer.resblocks.{i}"
        y = norm(h, f"{b}.ln_1")
        qkv = y @ p[f"{b}.attn.in_proj_weight"].T + p[f"{b}.attn.in_proj_bias"]
        q, k, v = (
            t.reshape(batch, -1, heads, head_dim).transpose(1, 2) for t in qkv.split(width, dim=-1)
        )
        attention = torch.softmax(q @ k.transpose(-2, -1) / head_dim**0.5, dim=-1)
        y = (attention @ v).transpose(1, 2).reshape(batch, -1, width)
        h = h + y @ p[f"{b}.attn.out_proj.weight"].T + p[f"{b}.attn.out_proj.bias"]
        y = norm(h, f"{b}.ln_2")
        y = activation(y @ p[f"{b}.mlp.c_fc.weight"].T + p[f"{b}.mlp.c_fc.bias"])
        h = h + y @ p[f"{b}.mlp.c_proj.weight"].T + p[f"{b}.mlp.c_proj.bias"]
    pooled = norm(h[:, 0], "ln_post") @ p["proj"]
    return F.normalize(pooled, dim=-1)
