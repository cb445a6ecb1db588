"""Settings, read from the environment (and `.env`). Every field is listed in `.env.example`."""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDER_API_KEY = "change-me"


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"REDIS_SENTINELS: {address!r} is not host:port")
    return host, int(port)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    env: Literal["dev", "production"] = "production"

    database_url: str = "postgresql+psycopg://photoembed:photoembed@localhost:5432/photoembed"
    # a streaming replica for searches and lists (docs/operations.md "Searches on a replica")
    search_database_url: str = ""
    redis_url: str = "redis://localhost:6379/0"
    # Redis through Sentinel (docs/operations.md "Redis with Sentinel"): the sentinels name the
    # master; REDIS_URL then gives only its database number, user and password
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_sentinel_master: str = "photoembed"
    redis_sentinel_password: SecretStr = SecretStr("")
    redis_socket_timeout_seconds: float = Field(default=5.0, gt=0)
    storage_dir: Path = Path("./.photoembed/photos")
    storage_url: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")

    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_workers: int = 0
    api_threads: int = 16
    max_upload_bytes: int = 25 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    min_image_side: int = 16

    embed_backend: Literal["open_clip", "transformers"] = "open_clip"
    embed_runtime: Literal["auto", "torch", "onnx"] = "auto"
    hf_model: str = "openai/clip-vit-base-patch32"
    clip_model_name: str = "ViT-B-32"
    clip_pretrained: str = "openai"
    clip_cache_dir: Path = Path("./.photoembed/models")
    clip_quick_gelu: Literal["auto", "true", "false"] = "auto"
    clip_device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    clip_precision: Literal["auto", "fp32", "tf32", "fp16", "bf16"] = "auto"
    selfcheck_reference_dir: Path | None = None

    worker_processes: int = 0
    worker_threads: int = 0
    torch_threads: int = 0
    inference_streams: int = 0
    db_pool_size: int = 0
    queue_name: str = "photos"
    max_attempts: int = 5
    max_retries: int = 20
    retry_min_backoff_ms: int = 1_000
    retry_max_backoff_ms: int = 60_000
    give_up_after_seconds: int = 86_400
    claim_lease_seconds: int = 600
    sweep_interval_seconds: int = 30
    sweep_pending_grace_seconds: int = 60
    redis_heartbeat_timeout_ms: int = 60_000
    redis_maintenance_chance: int = 10_000
    decode_draft_side: int = 0
    jpeg_decoder: Literal["auto", "pillow", "torchvision"] = "auto"
    embed_batch_size: int = 0
    embed_batch_wait_ms: int = 20

    # hnsw.ef_search of the photo and face searches; 0: the measured default (docs/scale.md: 100,
    # recall 1.0 at 100,000 and 1,000,000 photos)
    search_ef_search: int = Field(default=0, ge=0, le=1000)

    faces_enabled: bool = True
    face_model: Literal["dlib", "insightface"] = "dlib"
    face_model_dir: Path | None = None
    face_queue_name: str = "faces"
    face_detector: Literal["blazeface", "hog"] = "blazeface"
    face_detect_side: int = 1024
    face_upsample: int = 1
    face_min_score: float = 0.0
    face_min_size: int = 36
    face_match_distance: float = 0.0
    face_min_faces: int = 2
    face_worker_processes: int = 0
    face_worker_threads: int = 2
    face_worker_priority: Literal["idle", "normal"] = "idle"
    face_yield_seconds: int = 300
    # set by `photoembed worker` for each group of processes it starts: which queues a process
    # consumes and which models its boot checks load
    worker_role: Literal["all", "photos", "faces", "events"] = "all"

    # events and webhooks (docs/api.md "Events and webhooks")
    encryption_key: SecretStr = SecretStr("")
    events_retention_days: int = Field(default=7, ge=1)
    webhook_queue_name: str = "webhooks"
    webhook_worker_threads: int = Field(default=8, ge=1)
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_max_response_bytes: int = Field(default=64 * 1024, ge=0)
    webhook_retry_hours: int = Field(default=25, ge=24)
    webhook_disable_after_hours: int = Field(default=24, ge=1)
    webhook_poll_ms: int = Field(default=500, ge=50)

    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9191
    metrics_dir: Path | None = None

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"

    @field_validator("api_keys", "redis_sentinels", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_are_host_port(cls, value: list[str]) -> list[str]:
        for address in value:
            _host_port(address)
        return value

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [_host_port(address) for address in self.redis_sentinels]

    def check_api_keys(self) -> None:
        """The API refuses to start outside dev mode without real keys (the worker needs none)."""
        if self.env != "dev" and (not self.api_keys or PLACEHOLDER_API_KEY in self.api_keys):
            raise ValueError(
                "API_KEYS must hold at least one real key outside dev mode "
                f"(ENV={self.env}); set API_KEYS=key1,key2 or ENV=dev for a local run"
            )

    def environment(self) -> dict[str, str]:
        """These settings as environment variables: a child process reading them gets the same."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[name.upper()] = ",".join(value) if isinstance(value, list) else str(value)
        return env

    @property
    def read_database_url(self) -> str:
        """Where searches and lists read: the replica when one is set, else the primary."""
        return self.search_database_url or self.database_url

    @property
    def storage_location(self) -> str:
        """STORAGE_URL, or the folder STORAGE_DIR when it is not set."""
        return self.storage_url or self.storage_dir.expanduser().resolve().as_uri()

    @field_validator("selfcheck_reference_dir", "metrics_dir", "face_model_dir", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def quick_gelu_override(self) -> bool | None:
        """`None` means: follow the pretrained tag's (or weights file's) metadata."""
        return {"auto": None, "true": True, "false": False}[self.clip_quick_gelu]

    @property
    def worker_metrics_dir(self) -> Path:
        return (
            self.metrics_dir
            or Path(tempfile.gettempdir()) / f"photoembed-metrics-{self.metrics_port}"
        )

    @property
    def reference_dir(self) -> Path:
        return self.selfcheck_reference_dir or self.clip_cache_dir / "references"


def settings_table() -> str:
    """The configuration table of docs/configuration.md, generated from this class (`photoembed settings`).
    What each setting means is said beside it in `.env.example`."""
    rows = ["| variable | type | default |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        shown = ",".join(default) if isinstance(default, list) else default
        if isinstance(shown, SecretStr):
            shown = shown.get_secret_value()
        annotation = str(field.annotation).replace("typing.", "").replace("pathlib.", "")
        annotation = annotation.replace("<class '", "").replace("'>", "").replace("|", "or")
        rows.append(f"| `{name.upper()}` | {annotation} | `{'' if shown is None else shown}` |")
    return "\n".join(rows)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
