"""The boot self-check on real processes: a model that warns, is missing, is damaged or drifts from
its recorded reference stops the worker before it takes a single message."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import psycopg
import pytest
import redis

from photoembed.clip.backends.openclip import read_sidecar
from photoembed.clip.selfcheck import load_recording
from photoembed.config import Settings
from tests.helpers import encode, make_photo, seed_hf_cache, wait_for_status

pytestmark = pytest.mark.slow


def _photo_row(settings: Settings, photo_id: str) -> tuple[str, int]:
    url = settings.database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT status, attempts FROM photos WHERE id = %s", (photo_id,)
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_worker_with_gelu_on_openai_weights_exits_without_consuming_then_a_correct_one_processes(
    settings, api, start_service, redis_client: redis.Redis
):
    # given a photo whose message waits in Redis
    response = api.post("/photos", files={"file": ("p.jpg", encode(make_photo(21)), "image/jpeg")})
    photo_id = response.json()["id"]
    waiting = f"dramatiq:{settings.queue_name}.msgs"
    assert redis_client.hlen(waiting) == 1

    # when a worker starts with CLIP_QUICK_GELU=false
    wrong = start_service("worker", settings, CLIP_QUICK_GELU="false")

    # then it exits non-zero, says why, and the message and the row are untouched
    assert wrong.wait(timeout=180) != 0
    assert "selfcheck.failed" in wrong.log and "QuickGELU mismatch" in wrong.log
    assert redis_client.hlen(waiting) == 1
    assert _photo_row(settings, photo_id) == ("PENDING", 0)

    # when a worker with the default settings starts, it processes that same message
    right = start_service("worker", settings)
    right.wait_for_log("selfcheck.passed")
    assert wait_for_status(api, photo_id, {"READY", "FAILED"})["status"] == "READY"
    assert _photo_row(settings, photo_id) == ("READY", 1)


def test_missing_weights_offline_fail_with_what_was_wanted_where_and_the_two_fixes(
    settings, start_service, tmp_path
):
    empty = settings.model_copy(update={"clip_cache_dir": tmp_path / "empty-cache"})
    check = start_service("selfcheck", empty)
    assert check.wait() == 1
    log = check.log
    assert "model_unavailable" in log
    assert "'ViT-B-32'" in log and "'openai'" in log and "HF_HUB_OFFLINE=1" in log
    assert str(tmp_path / "empty-cache") in log
    assert "photoembed model download" in log and "CLIP_PRETRAINED=/path/to/weights.bin" in log
    assert "Traceback" not in log


def test_truncated_weights_in_the_cache_fail_the_boot_naming_file_and_checksum(
    settings, start_service, weights_file, tmp_path
):
    meta = read_sidecar(weights_file)
    assert meta is not None
    source = tmp_path / "source"
    source.mkdir()
    partial = source / "vit.bin"
    with weights_file.open("rb") as full, partial.open("wb") as out:
        out.write(full.read(100_000_000))
    (source / "vit.bin.meta.json").write_text(json.dumps({**meta.__dict__}))  # full file's sha256
    cache = tmp_path / "damaged-cache"
    seed_hf_cache(cache, partial)

    worker = start_service("worker", settings.model_copy(update={"clip_cache_dir": cache}))
    assert worker.wait(timeout=180) != 0
    assert "corrupt or partial" in worker.log and meta.sha256 in worker.log
    assert (
        cache / "models--timm--vit_base_patch32_clip_224.openai" / "blobs" / meta.sha256
    ).exists()


def test_reference_vector_is_recorded_and_a_mismatch_fails_the_boot(settings, start_service):
    recorded = start_service("selfcheck", settings, "--record")
    assert recorded.wait() == 0, recorded.log
    (reference,) = list(Path(settings.selfcheck_reference_dir).glob("*.json"))

    assert start_service("selfcheck", settings).wait() == 0

    data = json.loads(reference.read_text())
    data["vector"][0] += 5e-4  # as if the weights, the code or the activation had drifted
    reference.write_text(json.dumps(data))
    drifted = start_service("worker", settings)
    assert drifted.wait(timeout=180) != 0
    assert "reference_mismatch" in drifted.log and str(reference) in drifted.log


def test_reference_catches_a_gelu_model_even_where_no_warning_would(
    settings, start_service, weights_file, tmp_path
):
    # given a reference recorded for the weights with their right activation
    assert start_service("selfcheck", settings, "--record").wait() == 0
    # when the same weights are loaded as a bare file with CLIP_QUICK_GELU=false (nothing warns)
    bare = tmp_path / "bare.bin"
    shutil.copyfile(weights_file, bare)
    check = start_service("selfcheck", settings, CLIP_PRETRAINED=str(bare), CLIP_QUICK_GELU="false")
    # then the reference comparison alone refuses it
    assert check.wait() == 1
    assert "reference_mismatch" in check.log and "load_warning" not in check.log


def test_a_decode_setting_that_breaks_the_bound_refuses_the_boot_and_names_the_setting(
    settings, api, start_service, redis_client: redis.Redis
):
    # given a photo whose message waits in Redis
    response = api.post("/photos", files={"file": ("p.jpg", encode(make_photo(22)), "image/jpeg")})
    photo_id = response.json()["id"]
    waiting = f"dramatiq:{settings.queue_name}.msgs"

    # when a worker starts with the reduced JPEG decode of earlier versions
    reduced = start_service("worker", settings, DECODE_DRAFT_SIDE="224")

    # then its decode probe refuses the boot, naming the setting and the fix, and nothing is taken
    assert reduced.wait(timeout=180) != 0
    assert '"code": "decode"' in reduced.log
    assert "DECODE_DRAFT_SIDE=224" in reduced.log and "set DECODE_DRAFT_SIDE=0" in reduced.log
    assert redis_client.hlen(waiting) == 1
    assert _photo_row(settings, photo_id) == ("PENDING", 0)

    # and with the default (every photo decoded whole) the probe passes exactly
    exact = start_service("worker", settings)
    exact.wait_for_log("selfcheck.passed")
    probes = [line for line in exact.log.splitlines() if '"event": "selfcheck.decode"' in line]
    assert len(probes) == 2 and all('"max_abs": 0.0' in line for line in probes), probes
    assert wait_for_status(api, photo_id, {"READY", "FAILED"})["status"] == "READY"


class _LoggingEmbedder:
    """Stands in for ClipEmbedder in this unit test only: its load logs as OpenCLIP does."""

    def load(self) -> None:
        logging.getLogger().warning(
            "No pretrained weights loaded for model 'ViT-B-32'. Model initialized randomly."
        )


def test_a_warning_log_record_during_load_is_a_finding():
    _loaded, findings = load_recording(_LoggingEmbedder().load)
    assert [f.code for f in findings] == ["load_log"]
    assert "initialized randomly" in findings[0].message


def test_model_download_records_metadata_and_model_info_says_what_would_load(
    settings, start_service, weights_file, tmp_path
):
    import json as jsonlib

    from tests.helpers import seed_hf_cache

    cache = tmp_path / "cache"
    snapshot = seed_hf_cache(cache, weights_file)
    local = settings.model_copy(update={"clip_cache_dir": cache})

    download = start_service("model", local, "download")
    assert download.wait() == 0, download.log
    meta = jsonlib.loads(snapshot.with_name(snapshot.name + ".meta.json").read_text())
    assert meta["pretrained_tag"] == "openai" and meta["quick_gelu"] is True
    assert meta["embed_dim"] == 512 and meta["sha256"] == read_sidecar(weights_file).sha256

    info = start_service("model", local, "info")
    assert info.wait() == 0
    described = jsonlib.loads(info.log[info.log.index("{\n") :])
    assert described["loadable"] is True and described["source"] == "cache"
    assert (
        described["activation"] == "quickgelu"
        and "OpenCLIP metadata" in described["activation_source"]
    )

    offline = start_service(
        "model", local.model_copy(update={"clip_cache_dir": tmp_path / "none"}), "download"
    )
    assert offline.wait() == 1
    assert "photoembed model download" in offline.log and "HF_HUB_OFFLINE=1" in offline.log
