"""Search queries without torch: the text tower exported to ONNX beside the image tower, a
tokenizer that needs neither torch nor OpenCLIP, and an API that answers text and image queries in
an environment where torch cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import open_clip
import psutil
import psycopg
import pytest

from photoembed.clip.errors import ModelLoadError
from photoembed.clip.model_files import sidecar_path
from photoembed.clip.onnx_export import TEXT_PROBES, tokenizer_merges
from photoembed.clip.runtimes.onnx_text import OnnxTextEncoder
from photoembed.clip.runtimes.torch_runtime import ClipEmbedder
from photoembed.clip.runtimes.towers import onnx_folder, read_manifest
from photoembed.clip.tokenizer import ClipTokenizer
from photoembed.config import Settings
from tests.conftest import TEST_API_KEY, Services
from tests.helpers import (
    encode,
    make_person_photo,
    packages_of,
    seed_hf_cache,
    settings_env,
    wait_for_status,
)

pytestmark = pytest.mark.slow

TEXTS = [
    *TEXT_PROBES,
    "A PERSON IN A RED SHIRT",
    "ein Mann mit Brille, der lächelt",
    "Ελληνικά και русский текст",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines",
    "x" * 400,
    "?",
]


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory: pytest.TempPathFactory, weights_file: Path) -> Path:
    """A model cache of this module's own: a test damages the text export on purpose."""
    cache = tmp_path_factory.mktemp("text-onnx-cache")
    seed_hf_cache(cache, weights_file)
    return cache


@pytest.fixture(scope="module")
def text_settings(text_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(
        env="dev",
        clip_cache_dir=text_cache,
        selfcheck_reference_dir=tmp_path_factory.mktemp("references"),
        clip_device="cpu",
        embed_runtime="onnx",
    )
    done = subprocess.run(
        [sys.executable, "-m", "photoembed.cli", "model", "onnx"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return settings


def test_the_torch_free_tokenizer_gives_openclips_tokens():
    theirs = open_clip.get_tokenizer("ViT-B-32")
    ours = ClipTokenizer(tokenizer_merges("ViT-B-32"))
    assert np.array_equal(ours(TEXTS), theirs(TEXTS).numpy())
    # the long text is cut to the context and still ends with the end token
    assert ours(["x" * 400])[0, -1] == ours.end


def test_the_onnx_text_tower_gives_openclips_encode_text_vectors(text_settings):
    # given the towers `photoembed model onnx` prepared, named by their manifest
    manifest = read_manifest(text_settings)
    assert manifest is not None and manifest.text_onnx is not None, manifest
    torch_side = ClipEmbedder(text_settings.model_copy(update={"embed_runtime": "torch"}))
    assert manifest.identity == torch_side.load().identity

    # when texts go through the ONNX text tower and through OpenCLIP's encode_text
    encoder = OnnxTextEncoder(onnx_folder(text_settings) / manifest.text_onnx, threads=1)
    vectors = encoder.embed(TEXTS)
    expected = torch_side.embed_texts(TEXTS)

    # then they agree to 1e-5 (GELU for QuickGELU alone moves them about 1e-3)
    assert vectors.shape == (len(TEXTS), 512)
    assert float(np.abs(vectors - expected).max()) < 1e-5


def test_a_text_tower_that_disagrees_with_its_export_refuses_to_open(text_settings):
    manifest = read_manifest(text_settings)
    assert manifest is not None and manifest.text_onnx is not None
    path = onnx_folder(text_settings) / manifest.text_onnx
    sidecar = sidecar_path(path)
    original = sidecar.read_text()
    meta = json.loads(original)
    meta["probe_vectors"] = [list(np.roll(vector, 1)) for vector in meta["probe_vectors"]]
    sidecar.write_text(json.dumps(meta))
    try:
        with pytest.raises(ModelLoadError, match="embeds its probe texts"):
            OnnxTextEncoder(path, threads=1)
    finally:
        sidecar.write_text(original)


def test_the_api_answers_text_and_image_queries_without_torch(settings, tmp_path):
    # given a worker that has prepared the towers and embedded three photos
    services = Services(tmp_path)
    try:
        services("worker", settings).wait_for_log("selfcheck.passed", timeout=300)
        assert read_manifest(settings) is not None
        # and an API started where torch cannot be imported
        api_service = services("api", settings, **packages_of("api"))
        api_service.wait_for_log("Uvicorn running on", timeout=60)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{settings.api_port}",
            headers={"Authorization": f"Bearer {TEST_API_KEY}"},
            timeout=60,
        ) as api:
            images = [make_person_photo(person, 7) for person in (11, 12, 13)]
            ids = []
            for image in images:
                response = api.post("/photos", files={"file": ("p.jpg", encode(image))})
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
            for photo_id in ids:
                assert wait_for_status(api, photo_id, {"READY", "FAILED"})["status"] == "READY"

            # when it is searched by text (twice: the second from the cache) and by image
            text_query = {"text": "a person outdoors", "limit": 100}
            by_text = api.post("/search", json=text_query)
            again = api.post("/search", json=text_query)
            by_image = api.post(
                "/search", files={"file": ("q.jpg", encode(images[1]))}, data={"limit": "100"}
            )
        # then every answer is there, ranked as the torch model ranks the stored vectors
        assert by_text.status_code == 200, by_text.text + api_service.log[-3000:]
        assert again.json() == by_text.json()
        assert by_image.status_code == 200, by_image.text
        assert by_image.json()["results"][0]["photo_id"] == ids[1]
        assert by_image.json()["results"][0]["similarity"] > 0.999
        torch_side = ClipEmbedder(settings.model_copy(update={"embed_runtime": "torch"}))
        query = torch_side.embed_texts([text_query["text"]])[0]
        url = settings.database_url.replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(url) as conn:
            stored = dict(
                conn.execute(
                    "SELECT p.id::text, e.vector::text FROM embeddings e "
                    "JOIN photos p ON p.id = e.photo_id WHERE p.status = 'READY' AND e.model = %s",
                    (torch_side.load().identity,),
                ).fetchall()
            )
        similarity = {
            photo_id: float(np.asarray(json.loads(vector), dtype=np.float32) @ query)
            for photo_id, vector in stored.items()
        }
        for hit in by_text.json()["results"]:
            assert hit["similarity"] == pytest.approx(similarity[hit["photo_id"]], abs=1e-4)
        ranked = [hit["photo_id"] for hit in by_text.json()["results"]]
        assert set(ids) <= set(ranked)
        # and no process of the API has torch's library mapped
        assert api_service.process is not None
        root = psutil.Process(api_service.process.pid)
        for process in [root, *root.children(recursive=True)]:
            assert "libtorch" not in Path(f"/proc/{process.pid}/maps").read_text()
        assert "ModuleNotFoundError" not in api_service.log
    finally:
        services.stop_all()


def test_the_plain_package_migrates_and_its_worker_names_the_extra(settings):
    # given an environment with the plain package only (the API image's)
    env = {**settings_env(settings), **packages_of("api")}

    def photoembed(*args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "photoembed.cli", *args],
            env={**env, **overrides},
            capture_output=True,
            text=True,
            timeout=120,
        )

    # when it migrates the database (compose's `migrate` runs the API image) and starts a worker
    # that finds faces, and one that runs the model in torch
    migrated = photoembed("migrate")
    with_faces = photoembed("worker", FACES_ENABLED="true")
    in_torch = photoembed("worker", EMBED_RUNTIME="torch")
    # then the migration runs, and each worker stops at once saying what to install
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    for worker, extra in ((with_faces, "faces"), (in_torch, "worker")):
        assert worker.returncode != 0
        assert f"pip install 'photoembed[{extra}]'" in worker.stderr, worker.stderr[-3000:]
        assert "Traceback" not in worker.stderr
