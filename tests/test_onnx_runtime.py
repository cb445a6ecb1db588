"""EMBED_RUNTIME=onnx: OpenCLIP's image tower exported to ONNX from the same weights, run by ONNX
Runtime in a worker that never imports torch, and held to the torch model's vectors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import psycopg
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from photoembed.clip.errors import ModelLoadError
from photoembed.clip.model_files import sha256_file, sidecar_path
from photoembed.clip.onnx_export import onnx_path_for
from photoembed.clip.preprocessing import preprocessing_of
from photoembed.clip.runtimes.onnx_runtime import (
    OnnxEmbedder,
    OnnxMeta,
    create_session,
)
from photoembed.clip.runtimes.torch_runtime import ClipEmbedder
from photoembed.clip.selfcheck import run_selfcheck
from photoembed.config import Settings
from photoembed.photos import decode_stored, storage_for
from tests.helpers import encode, make_photo, seed_hf_cache, settings_env, wait_for_status

pytestmark = pytest.mark.slow

PARITY = 1e-4


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory, weights_file: Path) -> Path:
    """A model cache of this module's own: its tests damage the export on purpose."""
    cache = tmp_path_factory.mktemp("onnx-cache")
    seed_hf_cache(cache, weights_file)
    return cache


@pytest.fixture
def onnx_settings(tmp_path: Path, onnx_cache: Path) -> Settings:
    return Settings(
        env="dev",
        clip_cache_dir=onnx_cache,
        selfcheck_reference_dir=tmp_path / "references",
        clip_device="cpu",
        embed_runtime="onnx",
    )


def test_numpy_preprocessing_gives_exactly_openclips_pixels(model_settings):
    transform = ClipEmbedder(model_settings).load().preprocess
    preprocessing = preprocessing_of(transform)
    sizes = [(640, 480), (480, 640), (225, 224), (224, 224), (1001, 333), (301, 300), (100, 150)]
    images = [make_photo(seed, size) for seed, size in enumerate(sizes)]
    images.append(make_photo(9, (500, 400)).convert("L"))
    for image in images:
        assert np.array_equal(preprocessing(image), transform(image).numpy()), image.size


_EMBED_IN_A_FRESH_PROCESS = """
import json, sys
import numpy as np
from PIL import Image
from photoembed.clip.runtimes.onnx_runtime import OnnxEmbedder
from photoembed.config import Settings
embedder = OnnxEmbedder(Settings())
paths = sys.argv[1:-1]
vectors = embedder.embed_images([Image.open(p).convert("RGB") for p in paths])
np.save(sys.argv[-1], vectors)
print(json.dumps({"identity": embedder.load().identity, "torch_imported": "torch" in sys.modules}))
"""


def test_onnx_vectors_match_torch_and_the_onnx_process_never_imports_torch(onnx_settings, tmp_path):
    # given photos on disk
    paths = []
    for seed, size in ((21, (640, 480)), (22, (480, 800)), (23, (1200, 900))):
        path = tmp_path / f"{seed}.png"
        make_photo(seed, size).save(path)
        paths.append(path)

    # when a fresh process embeds them with the ONNX runtime (exporting on first use)
    out = tmp_path / "vectors.npy"
    done = subprocess.run(
        [sys.executable, "-c", _EMBED_IN_A_FRESH_PROCESS, *map(str, paths), str(out)],
        env=settings_env(onnx_settings),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])

    # then torch never entered that process, and the vectors are the torch model's, same identity
    assert report["torch_imported"] is False
    torch_side = ClipEmbedder(onnx_settings.model_copy(update={"embed_runtime": "torch"}))
    expected = torch_side.embed_images([Image.open(p).convert("RGB") for p in paths])
    vectors = np.load(out)
    assert vectors.shape == (3, 512)
    assert float(np.abs(vectors - expected).max()) < PARITY
    assert report["identity"] == torch_side.load().identity
    assert onnx_path_for(onnx_settings).is_file()


def test_an_export_that_disagrees_with_torch_refuses_the_boot(onnx_settings):
    # given an export whose recorded torch vector for the probe is not what the ONNX file gives
    OnnxEmbedder(onnx_settings).load()
    sidecar = sidecar_path(onnx_path_for(onnx_settings))
    original = sidecar.read_text()
    meta = json.loads(original)
    meta["probe_vector"] = list(np.roll(meta["probe_vector"], 1))
    sidecar.write_text(json.dumps(meta))
    try:
        # when the worker's self-check runs
        result = run_selfcheck(onnx_settings, OnnxEmbedder(onnx_settings))
    finally:
        sidecar.write_text(original)

    # then it refuses, saying by how much the runtimes disagree and how to fix it
    assert not result.ok
    assert "embeds the probe image" in result.findings[0].message
    assert "EMBED_RUNTIME=torch" in result.findings[0].message


def test_a_damaged_export_is_exported_again_not_used(onnx_settings, capfd):
    # given a prepared export whose file was damaged on disk
    OnnxEmbedder(onnx_settings).load()
    path = onnx_path_for(onnx_settings)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))

    # when a worker loads the ONNX runtime again
    loaded = OnnxEmbedder(onnx_settings).load()

    # then the damage was noticed, the file exported again, and it matches its sidecar
    assert "model.onnx_stale" in capfd.readouterr().err
    meta = OnnxMeta.read(path)
    assert meta is not None and loaded.path == path
    assert sha256_file(path) == meta.onnx_sha256


def test_what_onnx_runtime_logs_while_opening_a_model_becomes_a_python_warning(tmp_path):
    # given an ONNX model that ONNX Runtime warns about (an initializer no node uses)
    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, [1, 2])
    unused = numpy_helper.from_array(np.ones(3, np.float32), "unused")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["pixels"], ["embeddings"])], "g", [x], [y], [unused]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = tmp_path / "warns.onnx"
    onnx.save(model, str(path))

    # when a session is opened, then its C++ log line arrives as a warning the self-check records
    with pytest.warns(RuntimeWarning, match=r"onnxruntime: .*\[W:onnxruntime:.*unused"):
        create_session(path, 1)


def test_the_onnx_runtime_refuses_the_transformers_backend_with_the_fix(onnx_settings):
    settings = onnx_settings.model_copy(update={"embed_backend": "transformers"})
    with pytest.raises(ModelLoadError, match="needs EMBED_RUNTIME=torch"):
        onnx_path_for(settings)


def test_a_worker_on_the_onnx_runtime_stores_the_torch_models_vectors(settings, api, start_service):
    # given a worker running the image tower in ONNX Runtime
    onnx = settings.model_copy(update={"embed_runtime": "onnx"})
    worker = start_service("worker", onnx)
    worker.wait_for_log("selfcheck.passed", timeout=900)
    assert '"runtime": "onnx"' in worker.log

    # when photos are uploaded
    ids = []
    for seed in (31, 32, 33):
        body = encode(make_photo(seed, (900, 700)))
        response = api.post("/photos", files={"file": (f"{seed}.jpg", body, "image/jpeg")})
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])

    # then each ends READY with the vector the torch runtime gives for the stored file
    torch_side = ClipEmbedder(settings)
    storage = storage_for(settings)
    for photo_id in ids:
        photo = wait_for_status(api, photo_id, {"READY", "FAILED"})
        assert photo["status"] == "READY", photo
        assert photo["model"] == torch_side.load().identity
        with psycopg.connect(
            settings.database_url.replace("postgresql+psycopg", "postgresql")
        ) as c:
            key, vector = c.execute(
                "SELECT p.storage_key, e.vector::text FROM photos p JOIN embeddings e "
                "ON e.photo_id = p.id WHERE p.id = %s",
                (photo_id,),
            ).fetchone()
        image, _ = decode_stored(settings, storage, key)
        expected = torch_side.embed_images([image])[0]
        stored = np.array([float(v) for v in vector.strip("[]").split(",")])
        assert float(np.abs(stored - expected).max()) < PARITY
