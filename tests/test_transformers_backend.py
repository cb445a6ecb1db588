"""The transformers backend: parity with OpenCLIP on the same weights, the same self-check, and
vectors of another dimension through the whole product."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch

from photoembed.clip.embedder import ClipEmbedder
from tests.conftest import TEST_API_KEY
from tests.helpers import encode, make_photo, wait_for_status
from tests.hf_checkpoints import write_hf_clip, write_hf_clip_768, write_hf_siglip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def hf_clip(tmp_path_factory, weights_file):
    """Our OpenCLIP ViT-B-32 test weights, converted to a transformers CLIPModel folder."""
    return write_hf_clip(weights_file, tmp_path_factory.mktemp("hf") / "clip-vit-b-32")


def _transformers(settings, folder) -> ClipEmbedder:
    return ClipEmbedder(
        settings.model_copy(update={"embed_backend": "transformers", "hf_model": str(folder)})
    )


def test_transformers_and_open_clip_give_the_same_embeddings_for_the_same_weights(
    model_settings, hf_clip
):
    open_clip_side = ClipEmbedder(model_settings)
    transformers_side = _transformers(model_settings, hf_clip)
    photos = [make_photo(seed, (640, 480)) for seed in (51, 52, 53)]

    # the models alone, on the very same pixels
    pixels = torch.stack([open_clip_side.preprocess(photo) for photo in photos])
    a = open_clip_side.embed_tensors(pixels)
    b = transformers_side.embed_tensors(pixels)
    model_diff = float(np.abs(a - b).max())

    # each backend end to end, with its own preprocessing
    c = transformers_side.embed_images(photos)
    pipeline_diff = float(np.abs(a - c).max())
    pipeline_cos = float(np.min(np.sum(a * c, axis=1)))
    print(
        f"models: max abs {model_diff:.2e}; pipelines: max abs {pipeline_diff:.2e}, min cos {pipeline_cos:.6f}"
    )

    assert transformers_side.load().plan.quick_gelu is True  # read from config.json
    assert transformers_side.load().identity.startswith("transformers:")
    assert model_diff < 1e-5
    assert pipeline_cos > 0.999


def test_the_self_check_passes_a_clean_transformers_load_and_refuses_ones_that_warn(
    settings, start_service, weights_file, hf_clip, tmp_path
):
    backend = {"EMBED_BACKEND": "transformers"}
    assert start_service("selfcheck", settings, HF_MODEL=str(hf_clip), **backend).wait() == 0

    partial = write_hf_clip(weights_file, tmp_path / "no-text-weights", drop_text=True)
    refused = start_service("selfcheck", settings, HF_MODEL=str(partial), **backend)
    assert refused.wait() == 1
    assert "load_log" in refused.log and "transformers.modeling_utils" in refused.log

    # transformers 5.x warns about SiglipTextConfig's own default token ids on every SigLIP load
    siglip = write_hf_siglip(tmp_path / "siglip")
    warned = start_service("selfcheck", settings, HF_MODEL=str(siglip), **backend)
    assert warned.wait() == 1
    assert "bos_token_id must be" in warned.log


def test_a_768_dimensional_model_runs_through_upload_worker_and_search(
    own_database, start_service, tmp_path
):
    settings = own_database.model_copy(
        update={
            "embed_backend": "transformers",
            "hf_model": str(write_hf_clip_768(tmp_path / "clip-768")),
        }
    )
    api = start_service("api", settings)
    api.wait_for_log("Application startup complete", timeout=60)
    worker = start_service("worker", settings)
    worker.wait_for_log("selfcheck.passed")
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{settings.api_port}",
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        timeout=60,
    )
    ids = [
        client.post("/photos", files={"file": ("p.jpg", encode(make_photo(s)))}).json()["id"]
        for s in (61, 62, 63)
    ]
    for photo_id in ids:
        assert wait_for_status(client, photo_id, {"READY", "FAILED"})["status"] == "READY"

    embedding = client.get(f"/photos/{ids[0]}/embedding").json()
    assert embedding["dim"] == 768 and len(embedding["vector"]) == 768
    assert embedding["model"].startswith("transformers:")
    results = client.post("/search", data={"photo_id": ids[1], "limit": "10"}).json()
    assert results["results"][0]["photo_id"] == ids[1]
    assert results["results"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert {hit["photo_id"] for hit in results["results"]} == set(ids)

    # text search needs the checkpoint's tokenizer, which this folder lacks: a clear 503
    text = client.post("/search", data={"text": "a person"})
    assert text.status_code == 503 and "tokenizer" in text.json()["detail"]
