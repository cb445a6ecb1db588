"""The transformers backend: parity with OpenCLIP on the same weights, the same self-check, and
vectors of another dimension through the whole product."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from photoembed.clip.errors import ModelLoadError
from photoembed.clip.runtimes.torch_runtime import ClipEmbedder
from tests.conftest import TEST_API_KEY
from tests.helpers import encode, make_photo, wait_for_status
from tests.hf_checkpoints import (
    write_hf_clip,
    write_hf_clip_768,
    write_hf_siglip,
    write_hf_siglip2_base,
)

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
    pixels = np.stack([open_clip_side.preprocess(photo) for photo in photos])
    a = open_clip_side.embed_pixels(pixels)
    b = transformers_side.embed_pixels(pixels)
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

    # SigLIP v1's config leaves bos/eos at SiglipTextConfig's defaults, outside its own vocabulary:
    # transformers warns, and here the warning is true, so it is not excused
    siglip = write_hf_siglip(tmp_path / "siglip")
    warned = start_service("selfcheck", settings, HF_MODEL=str(siglip), **backend)
    assert warned.wait() == 1
    assert "bos_token_id must be" in warned.log and "selfcheck.excused" not in warned.log


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
    api.wait_for_log("Uvicorn running on", timeout=60)
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


def test_a_siglip2_checkpoint_passes_the_self_check_and_embeds_768_d_vectors(
    settings, model_settings, start_service, tmp_path
):
    # given a checkpoint with google/siglip2-base-patch16-224's published config (random weights)
    siglip2 = write_hf_siglip2_base(tmp_path / "siglip2-base-patch16-224")

    # when the worker's self-check loads it through the transformers backend
    checked = start_service(
        "selfcheck", settings, HF_MODEL=str(siglip2), EMBED_BACKEND="transformers"
    )

    # then it passes: transformers' one warning (about SiglipTextConfig's class defaults, not this
    # checkpoint: huggingface/transformers#47612) is excused by name, in the log, nothing else
    assert checked.wait(timeout=300) == 0, checked.log[-3000:]
    assert "selfcheck.passed" in checked.log
    assert "selfcheck.excused" in checked.log and "transformers#47612" in checked.log

    # and photos become unit 768-d vectors
    embedder = _transformers(model_settings, siglip2)
    vectors = embedder.embed_images([make_photo(71), make_photo(72, (480, 640))])
    assert vectors.shape == (2, 768)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)

    # and text search, which needs SigLIP2's Gemma tokenizer (not in the folder), says so
    with pytest.raises(ModelLoadError, match="tokenizer"):
        embedder.embed_texts(["a person in a red coat"])


def test_a_siglip2_checkpoint_whose_own_token_ids_are_out_of_vocabulary_is_refused(
    settings, start_service, tmp_path
):
    # given the same checkpoint, but its own config names a token id outside its vocabulary
    good = write_hf_siglip2_base(tmp_path / "good")
    bad = tmp_path / "bad"
    bad.mkdir()
    for item in good.iterdir():
        (bad / item.name).hardlink_to(item)
    config = json.loads((good / "config.json").read_text())
    config["text_config"]["pad_token_id"] = 300000
    (bad / "config.json").unlink()
    (bad / "config.json").write_text(json.dumps(config))

    # when the self-check loads it, then the warning is not excused and the boot is refused
    refused = start_service("selfcheck", settings, HF_MODEL=str(bad), EMBED_BACKEND="transformers")
    assert refused.wait(timeout=300) == 1
    assert "got 300000" in refused.log and "selfcheck.excused" not in refused.log
