"""The CUDA paths, on a machine with a GPU (`pytest -m gpu`; skipped where torch sees none):
nvJPEG decoding against the CPU path, the self-check at fp16 against a reference recorded in fp32 on
the CPU, and a batch too large for the memory it is given split until it runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from photoembed.clip import device_decode
from photoembed.clip.runtimes.torch_runtime import ClipEmbedder
from photoembed.clip.selfcheck import run_selfcheck
from photoembed.images import DecodeLimits, load_rgb, read_jpeg_header
from tests.helpers import encode, make_photo

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

LIMITS = DecodeLimits(max_pixels=10**8, min_side=16)


@pytest.fixture
def cuda_settings(model_settings):
    return model_settings.model_copy(
        update={"clip_device": "cuda", "jpeg_decoder": "torchvision", "embed_batch_size": 64}
    )


def test_nvjpeg_decodes_like_the_cpu_decoder(model_settings):
    photos = [encode(make_photo(s, (1600, 1200)), quality=90) for s in range(8)]
    items = [device_decode.EncodedJpeg(d, read_jpeg_header(d)) for d in photos]  # type: ignore[arg-type]
    on_gpu = device_decode.decode_jpegs(items, "cuda")
    on_cpu = device_decode.decode_jpegs(items, "cpu")
    for gpu_image, cpu_image in zip(on_gpu, on_cpu, strict=True):
        assert isinstance(gpu_image, torch.Tensor) and isinstance(cpu_image, torch.Tensor)
        difference = (gpu_image.cpu().float() - cpu_image.float()).abs().mean().item()
        assert difference < 2.0  # nvJPEG's IDCT and upsampling differ from libjpeg-turbo's a little


def test_fp16_on_cuda_passes_the_self_check_against_a_cpu_fp32_reference(
    model_settings, cuda_settings
):
    recorded = run_selfcheck(model_settings, ClipEmbedder(model_settings), record=True)
    assert recorded.recorded
    result = run_selfcheck(
        cuda_settings, ClipEmbedder(cuda_settings.model_copy(update={"clip_precision": "fp16"}))
    )
    assert result.ok, result.findings


def test_photos_through_nvjpeg_stay_within_the_bound_of_the_exact_cpu_path(cuda_settings):
    # fp32 on both sides, so that only the decode and resize differ
    embedder = ClipEmbedder(cuda_settings.model_copy(update={"clip_precision": "fp32"}))
    embedder.load()
    for seed in range(4):
        data = encode(make_photo(40 + seed, (4000, 3000)), quality=90)
        exact, _ = load_rgb(data, LIMITS)
        reference = embedder.embed_images([exact], exact=True)[0]
        embedded = embedder.embed_photo(data, LIMITS)
        assert embedded.decode_mode == "device-jpeg"
        moved = float(np.abs(embedded.vector - reference).max())
        print(f"nvJPEG + GPU resize vs exact CPU decode: {moved:.2e}")
        assert moved <= 2e-4


def test_a_real_cuda_out_of_memory_is_recognised_as_a_device_error(cuda_settings):
    # the batcher splits batches on exactly these (tests/test_pipeline.py runs the split on CPU)
    from photoembed.clip.runtimes.torch_runtime import is_device_error

    with pytest.raises(torch.cuda.OutOfMemoryError) as caught:
        torch.empty(1 << 45, dtype=torch.uint8, device="cuda")
    assert is_device_error(caught.value)
    torch.cuda.empty_cache()
