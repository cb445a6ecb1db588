"""QuickGELU-correct, offline-safe loading through the real OpenCLIP code on a seeded cache."""

from __future__ import annotations

import gc
import io
import shutil
import warnings

import numpy as np
import open_clip
import pytest
import torch

from photoembed.clip.backends.openclip import plan_model, read_sidecar, tag_trained_with_quick_gelu
from photoembed.clip.errors import ActivationUnknownError, ModelLoadError, WeightsCorruptError
from photoembed.clip.runtimes.torch_runtime import ClipEmbedder, select_device
from photoembed.clip.weights_files import export_weights
from photoembed.config import Settings
from tests import reference_vit
from tests.helpers import make_photo

pytestmark = pytest.mark.slow


def _batch(embedder: ClipEmbedder) -> torch.Tensor:
    return torch.from_numpy(
        np.stack([embedder.preprocess(make_photo(seed)) for seed in (11, 12, 13)])
    )


def _activation_of(embedder: ClipEmbedder) -> str:
    return type(embedder.load().model.visual.transformer.resblocks[0].mlp.gelu).__name__


# Tags checked by hand against the papers and OpenCLIP's pretrained table: trained with QuickGELU
# (OpenAI's own, and the reproductions that copied its activation) or with standard GELU.
TRAINED_WITH_QUICK_GELU = [
    ("ViT-B-32", "openai"),
    ("ViT-B-32", "laion400m_e32"),
    ("ViT-B-32", "metaclip_400m"),
    ("ViT-B-16", "dfn2b"),
    ("ViT-L-14", "openai"),
    ("RN50", "yfcc15m"),
    ("RN50", "cc12m"),
]
TRAINED_WITH_GELU = [
    ("ViT-B-32", "laion2b_s34b_b79k"),
    ("ViT-B-32", "datacomp_xl_s13b_b90k"),
    ("ViT-B-16", "laion2b_s34b_b88k"),
    ("ViT-L-14", "laion2b_s32b_b82k"),
]


@pytest.mark.parametrize(("model_name", "tag"), TRAINED_WITH_QUICK_GELU)
def test_every_tag_trained_with_quick_gelu_gets_it_not_only_openai(model_name: str, tag: str):
    assert tag_trained_with_quick_gelu(model_name, tag) is True


@pytest.mark.parametrize(("model_name", "tag"), TRAINED_WITH_GELU)
def test_a_tag_trained_with_standard_gelu_does_not_get_quick_gelu(model_name: str, tag: str):
    assert tag_trained_with_quick_gelu(model_name, tag) is False


def test_default_load_is_quick_gelu_and_silent(model_settings):
    embedder = ClipEmbedder(model_settings)
    gc.collect()  # what earlier tests left for the collector must not warn inside the load
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = embedder.load()
    assert [str(w.message) for w in caught] == []
    assert loaded.plan.source == "cache"
    assert loaded.plan.quick_gelu is True
    assert _activation_of(embedder) == "QuickGELU"


def test_embeddings_match_an_independent_quick_gelu_forward_pass_and_not_a_gelu_one(
    model_settings, weights_file
):
    embedder = ClipEmbedder(model_settings)
    batch = _batch(embedder)
    service = torch.from_numpy(embedder.embed_pixels(batch.numpy())).double()
    state = torch.load(weights_file, weights_only=True)

    with_quick_gelu = reference_vit.encode_image(state, batch, reference_vit.quick_gelu)
    with_gelu = reference_vit.encode_image(state, batch, reference_vit.gelu)

    agree = (service - with_quick_gelu).abs().max().item()
    disagree = (service - with_gelu).abs().max().item()
    print(f"max abs diff: vs QuickGELU reference {agree:.2e}, vs GELU reference {disagree:.2e}")
    assert agree < 1e-5
    assert disagree > 1e-4


def test_quick_gelu_false_on_the_openai_tag_warns_like_open_clip_itself(
    model_settings, model_cache
):
    # given the library's own check on the tag (it runs when OpenCLIP resolves the tag itself)
    with warnings.catch_warnings(record=True) as library:
        warnings.simplefilter("always")
        open_clip.create_model_and_transforms(
            "ViT-B-32", pretrained="openai", cache_dir=str(model_cache)
        )
    # when we load the same tag from the cache with CLIP_QUICK_GELU=false
    embedder = ClipEmbedder(model_settings.model_copy(update={"clip_quick_gelu": "false"}))
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        embedder.load()
    # then we emit the very warning OpenCLIP emits, and the model really is GELU
    expected = "QuickGELU mismatch between final model config (quick_gelu=False) and pretrained tag 'openai' (quick_gelu=True)."
    assert [str(w.message) for w in library] == [expected]
    assert [str(w.message) for w in ours] == [expected]
    assert _activation_of(embedder) == "GELU"


def test_save_and_reload_through_a_weights_file_keeps_quick_gelu_and_the_embeddings(
    model_settings, tmp_path
):
    original = ClipEmbedder(model_settings)
    exported = tmp_path / "exported" / "vit-b-32.bin"
    meta = export_weights(original.load(), exported)
    assert meta.quick_gelu is True and read_sidecar(exported) == meta

    reloaded = ClipEmbedder(model_settings.model_copy(update={"clip_pretrained": str(exported)}))
    assert reloaded.load().plan.source == "file"
    assert _activation_of(reloaded) == "QuickGELU"
    batch = _batch(original)
    assert np.array_equal(
        original.embed_pixels(batch.numpy()), reloaded.embed_pixels(batch.numpy())
    )
    assert reloaded.load().weights_sha256 == meta.sha256


def test_a_weights_file_without_metadata_needs_clip_quick_gelu(
    model_settings, weights_file, tmp_path
):
    bare = tmp_path / "bare.bin"
    shutil.copyfile(weights_file, bare)

    with pytest.raises(ActivationUnknownError, match="CLIP_QUICK_GELU=true") as refused:
        plan_model("ViT-B-32", str(bare), model_settings.clip_cache_dir, None)
    assert str(bare) in str(refused.value)

    plan = plan_model("ViT-B-32", str(bare), model_settings.clip_cache_dir, True)
    assert plan.quick_gelu is True and plan.activation_source == "CLIP_QUICK_GELU"


def test_a_truncated_weights_file_is_reported_with_the_expected_checksum(
    model_settings, weights_file, tmp_path
):
    meta = read_sidecar(weights_file)
    assert meta is not None
    partial = tmp_path / "partial.bin"
    with weights_file.open("rb") as source, partial.open("wb") as target:
        target.write(source.read(50_000_000))
    shutil.copyfile(
        weights_file.with_name(weights_file.name + ".meta.json"), tmp_path / "partial.bin.meta.json"
    )

    embedder = ClipEmbedder(model_settings.model_copy(update={"clip_pretrained": str(partial)}))
    with pytest.raises(WeightsCorruptError) as corrupt:
        embedder.load()
    message = str(corrupt.value)
    assert "corrupt or partial" in message and meta.sha256 in message and str(partial) in message
    assert partial.exists()  # reported, never deleted


def test_device_selection_says_why():
    assert select_device("cpu") == ("cpu", "CLIP_DEVICE=cpu")
    device, reason = select_device("auto")
    assert device == ("cuda" if torch.cuda.is_available() else "cpu") and reason.startswith("auto:")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="no CUDA device"):
            select_device("cuda")


def test_plan_never_loads_and_names_source_and_activation(model_settings: Settings):
    plan = plan_model("ViT-B-32", "openai", model_settings.clip_cache_dir, None)
    info = plan.describe()
    assert info["source"] == "cache" and info["activation"] == "quickgelu"
    assert info["expected_sha256"] and info["weights_path"].endswith("open_clip_pytorch_model.bin")


def test_a_12_megapixel_jpeg_embeds_with_default_settings_as_its_full_decode_does(
    model_settings, tmp_path
):
    from PIL import Image

    from photoembed.photos import decode_limits
    from tests.helpers import encode

    data = encode(make_photo(40, (4000, 3000)), quality=90)
    embedder = ClipEmbedder(model_settings)
    with Image.open(io.BytesIO(data)) as image:
        full = embedder.embed_images([image.convert("RGB")])[0]
    served = embedder.embed_photo(data, decode_limits(model_settings))
    moved = float(np.abs(full - served.vector).max())
    print(f"default decode vs full: max abs {moved:.2e} ({served.decode_mode})")
    assert moved <= 2e-4  # the product's bound; the default decodes whole, so it is 0.0 here
