"""The CPU worker without torch, as the worker image runs it: torch, torchvision, OpenCLIP and
transformers hidden from every process of a real worker (tests/torchless), and a model folder
holding what the image's model stage leaves it, the ONNX export and the torch model's self-check
reference, without the weights. The image itself is built and run by `make compose-up-test`."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photoembed.clip.runtimes.onnx_runtime import OnnxEmbedder
from photoembed.clip.runtimes.torch_runtime import ClipEmbedder
from photoembed.clip.runtimes.towers import onnx_folder, read_manifest
from photoembed.config import Settings
from photoembed.faces import samples
from tests.conftest import Services, start_api
from tests.helpers import (
    encode,
    make_photo,
    packages_of,
    settings_env,
    wait_for_faces,
    wait_for_status,
)

pytestmark = pytest.mark.slow

FIDELITY = 2e-4  # the product's bound against the torch model
SAME_RUNTIME = 1e-5  # against the same ONNX tower run where torch is installed


def _photoembed(
    settings: Settings, *args: str, torch: bool = True
) -> subprocess.CompletedProcess[str]:
    env = settings_env(settings) | ({} if torch else packages_of("worker"))
    return subprocess.run(
        [sys.executable, "-m", "photoembed.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="module")
def image_models(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Path]:
    """What the worker image's /models holds: the model stage's commands, then its two folders
    copied out (Dockerfile.worker)."""
    stage = Settings(env="dev", clip_cache_dir=model_cache, clip_device="cpu")
    references = tmp_path_factory.mktemp("stage-references")
    exported = _photoembed(stage.model_copy(update={"embed_runtime": "onnx"}), "model", "onnx")
    assert exported.returncode == 0, exported.stderr[-3000:]
    recorded = _photoembed(
        stage.model_copy(update={"embed_runtime": "torch", "selfcheck_reference_dir": references}),
        "selfcheck",
        "--record",
    )
    assert recorded.returncode == 0, recorded.stderr[-3000:]
    models = tmp_path_factory.mktemp("image") / "models"
    shutil.copytree(onnx_folder(stage), models / "onnx", copy_function=os.link)
    shutil.copytree(references, models / "references")
    yield models


def _torchless(settings: Settings, models: Path) -> Settings:
    return settings.model_copy(
        update={"clip_cache_dir": models, "selfcheck_reference_dir": models / "references"}
    )


def test_the_worker_embeds_and_finds_faces_without_torch(
    settings: Settings, image_models: Path, tmp_path: Path
) -> None:
    # given the API, and a worker with faces on whose processes cannot import torch, whose model
    # folder has no weights
    assert not any(image_models.rglob("*.bin")) and not any(image_models.rglob("*.safetensors"))
    worker_settings = _torchless(settings, image_models).model_copy(update={"faces_enabled": True})
    services = Services(tmp_path)
    try:
        with start_api(settings, services) as api:
            worker = services("worker", worker_settings, **packages_of("worker"))
            worker.wait_for_log("selfcheck.passed", timeout=180)
            # when a photo and a group photo of two people are uploaded
            photo = make_photo(41, (800, 600))
            photo_id = api.post("/photos", files={"file": ("p.jpg", encode(photo))}).json()["id"]
            group = samples.group_photo(["astronaut", "hopper"], samples.real_faces())
            group_id = api.post("/photos", files={"file": ("g.jpg", encode(group))}).json()["id"]
            # then both are READY and the group's two faces are found
            wait_for_status(api, photo_id, {"READY", "FAILED"})
            faces = wait_for_faces(api, group_id, timeout=300)
            served = np.asarray(api.get(f"/photos/{photo_id}/embedding").json()["vector"])
    finally:
        services.stop_all()
    assert (faces["status"], faces["faces_status"], faces["face_count"]) == ("READY", "DONE", 2)
    # and the vector (of the photo as the API stored it: the same JPEG bytes, decoded the same
    # way) is the torch model's within the product's bound, and the same ONNX tower's where torch
    # is installed within 1e-5
    decoded = Image.open(io.BytesIO(encode(photo))).convert("RGB")
    torch_model = ClipEmbedder(settings.model_copy(update={"embed_runtime": "torch"}))
    assert float(np.abs(served - torch_model.embed_images([decoded])[0]).max()) < FIDELITY
    with_torch = OnnxEmbedder(settings.model_copy(update={"embed_runtime": "onnx"}))
    assert float(np.abs(served - with_torch.embed_images([decoded])[0]).max()) < SAME_RUNTIME
    # and the worker neither exported nor planned anything: it read the image's export
    log = worker.log
    assert "model.onnx_exported" not in log
    assert '"model.loaded"' in log and "selfcheck.passed" in log


def test_the_selfcheck_without_torch_passes_and_refuses_gelu_a_missing_file_and_a_wrong_vector(
    model_settings: Settings, image_models: Path, tmp_path: Path
) -> None:
    # given the image's model folder, copied so that it can be damaged
    models = tmp_path / "models"
    shutil.copytree(image_models, models, copy_function=os.link)
    settings = _torchless(model_settings, models)
    # when the self-check runs without torch, then it passes on the image as built
    passed = _photoembed(settings, "selfcheck", torch=False)
    assert passed.returncode == 0, passed.stderr[-3000:]
    assert "selfcheck.passed" in passed.stderr
    # when GELU is asked of weights trained with QuickGELU, then it refuses and names the fix
    gelu = _photoembed(
        settings.model_copy(update={"clip_quick_gelu": "false"}), "selfcheck", torch=False
    )
    assert gelu.returncode == 1
    assert "no ONNX export of ViT-B-32 (openai, CLIP_QUICK_GELU=false)" in gelu.stderr
    assert (
        ":quickgelu only: check CLIP_MODEL_NAME, CLIP_PRETRAINED and CLIP_QUICK_GELU" in gelu.stderr
    )
    # when the exported file is missing, then it refuses and names the fix
    manifest = read_manifest(settings)
    assert manifest is not None
    (onnx_folder(settings) / manifest.image_onnx).unlink()
    missing = _photoembed(settings, "selfcheck", torch=False)
    assert missing.returncode == 1
    assert "is missing: run `photoembed model onnx`" in missing.stderr
    shutil.copy2(onnx_folder(model_settings) / manifest.image_onnx, onnx_folder(settings))
    # when the recorded reference is not what the export embeds, then it refuses
    (reference,) = (models / "references").glob("ViT-B-32-*.json")
    recorded = json.loads(reference.read_text())
    recorded["vector"] = list(np.roll(recorded["vector"], 1))
    reference.unlink()  # a link to the module's copy: replace it, do not write through it
    reference.write_text(json.dumps(recorded))
    wrong = _photoembed(settings, "selfcheck", torch=False)
    assert wrong.returncode == 1
    assert "reference_mismatch" in wrong.stderr
