"""ClipEmbedder: any backend's model run in PyTorch, on the CPU or a GPU; one per process, created
cheaply, loaded lazily under a lock, QuickGELU-correct."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import open_clip
import torch
from PIL import Image

from photoembed.clip import device_decode
from photoembed.clip.backends import openclip, plan_for, transformers
from photoembed.clip.contract import BatchItem, BatchResult, EmbeddedPhoto, ModelPlan
from photoembed.clip.errors import ModelLoadError
from photoembed.clip.preprocessing import Preprocessing, preprocessing_of
from photoembed.clip.runtimes.base import BatchedEmbedder
from photoembed.config import Settings
from photoembed.images import DEVICE_DECODE_MODE, DecodeLimits, check_size, read_jpeg_header
from photoembed.logging import get_logger
from photoembed.metrics import DECODE_SECONDS
from photoembed.quality import score_from_stats

log = get_logger(__name__)


def select_device(preference: str) -> tuple[str, str]:
    """The device to run on and why, for the log."""
    if preference == "cpu":
        return "cpu", "CLIP_DEVICE=cpu"
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError("CLIP_DEVICE=cuda but no CUDA device is available to torch")
        return "cuda", "CLIP_DEVICE=cuda"
    if preference == "mps":
        if not torch.backends.mps.is_available():
            raise ModelLoadError("CLIP_DEVICE=mps but the MPS backend is not available")
        return "mps", "CLIP_DEVICE=mps"
    if torch.cuda.is_available():
        return "cuda", f"auto: CUDA available ({torch.cuda.get_device_name(0)})"
    if torch.backends.mps.is_available():
        return "mps", "auto: Apple MPS available"
    return "cpu", "auto: no CUDA or MPS device available"


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    plan: ModelPlan
    device: str
    identity: str
    weights_sha256: str
    embed_dim: int
    load_seconds: float


def load_model(settings: Settings) -> LoadedModel:
    started = time.perf_counter()
    plan = plan_for(settings)
    device, device_reason = select_device(settings.clip_device)
    log.info(
        "model.loading",
        model=plan.model_name,
        pretrained=plan.pretrained,
        source=plan.source,
        weights=str(plan.weights_path),
        activation=plan.activation,
        activation_source=plan.activation_source,
        device=device,
        device_reason=device_reason,
    )
    if plan.weights_path is not None:
        openclip.verify_checksum(plan.weights_path, plan.expected_sha256)
    if plan.backend == transformers.BACKEND:
        model, preprocess, embed_dim = transformers.load_transformers(plan, device)
    else:
        model, preprocess, embed_dim = openclip.build_openclip(plan, device)
    if plan.source == "hub":  # now it is in the cache: record what was fetched
        plan = plan_for(settings)
    return _loaded(model, preprocess, plan, device, embed_dim, started)


def _loaded(
    model: torch.nn.Module,
    preprocess: Callable[[Image.Image], torch.Tensor],
    plan: ModelPlan,
    device: str,
    embed_dim: int,
    started: float,
) -> LoadedModel:
    assert plan.weights_path is not None
    sha256 = plan.expected_sha256 or openclip.verify_checksum(plan.weights_path, None)
    loaded = LoadedModel(
        model=model,
        preprocess=preprocess,
        plan=plan,
        device=device,
        identity=plan.identity(sha256),
        weights_sha256=sha256,
        embed_dim=embed_dim,
        load_seconds=time.perf_counter() - started,
    )
    log.info(
        "model.loaded",
        model=loaded.identity,
        embed_dim=embed_dim,
        device=device,
        duration_ms=round(loaded.load_seconds * 1000),
    )
    return loaded


def _drop_text_tower(model: torch.nn.Module) -> None:
    """The worker embeds images only: free the text tower (~240 MB for ViT-B-32) and hand the
    memory back to the OS (glibc keeps freed blocks otherwise)."""
    for name in ("transformer", "token_embedding", "ln_final"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            setattr(model, name, None)
    for name in ("positional_embedding", "text_projection"):
        if isinstance(getattr(model, name, None), torch.nn.Parameter):
            setattr(model, name, None)
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@contextlib.contextmanager
def precision_scope(device: str, precision: str) -> Iterator[None]:
    """Run the enclosed forward pass in `precision`: fp32 (TF32 off), tf32 (CUDA matmuls and
    convolutions in TF32), or fp16/bf16 autocast."""
    cuda = torch.backends.cuda.matmul
    saved = cuda.allow_tf32, torch.backends.cudnn.allow_tf32
    cuda.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        if precision in _AUTOCAST_DTYPES:
            device_type = "cuda" if device.startswith("cuda") else "cpu"
            with torch.autocast(device_type, dtype=_AUTOCAST_DTYPES[precision]):
                yield
        else:
            yield
    finally:
        cuda.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def is_device_error(exc: BaseException) -> bool:
    """A GPU out of memory (or another CUDA runtime failure): worth retrying in smaller pieces."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        marker in text for marker in ("out of memory", "CUDA error", "CUBLAS_STATUS", "cuDNN error")
    )


class ClipEmbedder(BatchedEmbedder):
    """Turns images into L2-normalised embeddings in torch, on the CPU or a GPU. Cheap to create;
    loads on first use.

    `image_only` (the worker) frees the text tower after loading; text queries need the default.
    On CUDA with JPEG_DECODER=torchvision (the default there), JPEGs go to the batch as encoded
    bytes and are decoded, scored and preprocessed on the GPU (`device_decode`).
    """

    runtime = "torch"

    def __init__(self, settings: Settings, *, image_only: bool = False) -> None:
        super().__init__(settings)
        self._image_only = image_only
        self._device_prep: Preprocessing | None = None

    @property
    def precision(self) -> str:
        return "fp32" if self._settings.clip_precision == "auto" else self._settings.clip_precision

    def load(self) -> LoadedModel:
        loaded = super().load()
        assert isinstance(loaded, LoadedModel)
        return loaded

    def _load(self, started: float) -> LoadedModel:
        torch.set_num_threads(self._inference_threads)
        loaded = load_model(self._settings)
        if self._image_only and loaded.plan.backend == "open_clip":
            _drop_text_tower(loaded.model)
        if self._settings.jpeg_decoder == "torchvision" and loaded.plan.backend == "open_clip":
            try:
                self._device_prep = preprocessing_of(loaded.preprocess)
            except ModelLoadError:
                log.info("model.device_decode_off", reason="preprocessing not describable")
        return loaded

    def preprocess(self, image: Image.Image) -> np.ndarray:
        pixels: np.ndarray = self.load().preprocess(image).numpy()
        return pixels

    def _forward(self, pixels: torch.Tensor, exact: bool) -> torch.Tensor:
        loaded = self.load()
        with (
            torch.inference_mode(),
            precision_scope(loaded.device, "fp32" if exact else self.precision),
        ):
            features = loaded.model.encode_image(pixels)  # type: ignore[operator]
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def embed_pixels(self, batch: np.ndarray, *, exact: bool = False) -> np.ndarray:
        pixels = torch.from_numpy(batch).to(self.load().device)
        result: np.ndarray = self._forward(pixels, exact).cpu().numpy()
        return result

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Text queries through the text tower (OpenCLIP's tokenizer ships with the package)."""
        loaded = self.load()
        if self._image_only:
            raise RuntimeError("this embedder was loaded image-only; text needs the text tower")
        with torch.inference_mode():
            if loaded.plan.backend == transformers.BACKEND:
                assert isinstance(loaded.model, transformers.TransformersImageModel)
                tokens = transformers.tokenize(loaded.plan, texts, loaded.model.text_vocab_size)
                features = loaded.model.encode_text(
                    **{k: v.to(loaded.device) for k, v in tokens.items()}
                )
            else:
                ids = open_clip.get_tokenizer(loaded.plan.model_name)(list(texts))
                features = loaded.model.encode_text(ids.to(loaded.device))  # type: ignore[operator]
            features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.cpu().numpy()

    def embed_photo(self, data: bytes, limits: DecodeLimits) -> EmbeddedPhoto:
        self.load()
        header = read_jpeg_header(data) if self._device_prep is not None else None
        if header is None or not device_decode.device_decodable(header):
            return super().embed_photo(data, limits)
        info = check_size("JPEG", header.width, header.height, limits)
        try:
            vector, quality = self._batcher.submit(device_decode.EncodedJpeg(data, header))
        except device_decode.DecoderRefused:
            return super().embed_photo(data, limits)  # Pillow takes what the device decoder won't
        assert quality is not None
        return EmbeddedPhoto(
            vector=vector, quality=quality, info=info, decode_mode=DEVICE_DECODE_MODE
        )

    def _run_batch(self, items: list[BatchItem]) -> Sequence[BatchResult | BaseException]:
        """Mixed batches: pixels preprocessed by Pillow, and encoded JPEGs decoded on the device."""
        device = self.load().device
        inputs: list[torch.Tensor | BaseException] = []
        qualities: list[float | None] = []
        jpegs = [item for item in items if isinstance(item, device_decode.EncodedJpeg)]
        decoded: Iterator[device_decode.DecodedPhoto] = iter(())
        if jpegs:
            assert self._device_prep is not None
            started = time.perf_counter()
            decoded = iter(device_decode.decode_for_model(jpegs, self._device_prep, device))
            per_photo = (time.perf_counter() - started) / len(jpegs)
            for _ in jpegs:
                DECODE_SECONDS.observe(per_photo)
        for item in items:
            if isinstance(item, device_decode.EncodedJpeg):
                pixels, stats = next(decoded)
                inputs.append(pixels)
                size = (item.header.width, item.header.height)
                qualities.append(None if stats is None else score_from_stats(stats, size))
            else:
                assert isinstance(item, np.ndarray)
                inputs.append(torch.from_numpy(item).to(device))
                qualities.append(None)
        ready = [i for i, value in enumerate(inputs) if isinstance(value, torch.Tensor)]
        vectors: dict[int, np.ndarray] = {}
        if ready:
            batch = torch.stack([inputs[i] for i in ready])  # type: ignore[misc]
            vectors = dict(zip(ready, self._forward(batch, exact=False).cpu().numpy(), strict=True))
        return [
            value if isinstance(value, BaseException) else (vectors[i], qualities[i])
            for i, value in enumerate(inputs)
        ]

    def _is_device_error(self, exc: BaseException) -> bool:
        if not is_device_error(exc):
            return False
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning("inference.device_error", error=f"{type(exc).__name__}: {str(exc)[:300]}")
        return True
