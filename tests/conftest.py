"""Fixtures that start the real things: Postgres with pgvector, Redis, the seeded model cache."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

# No hub is reachable here: make every load in this process (and its children) offline-only.
os.environ["HF_HUB_OFFLINE"] = "1"

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import httpx
import psycopg
import pytest
import redis

from photoembed.cli.database import migrate
from photoembed.config import Settings
from photoembed.devstack import LocalPostgres, LocalRedis, free_port
from photoembed.webhooks.secrets import new_encryption_key
from tests.helpers import (
    ServiceProcess,
    random_weights,
    seed_hf_cache,
    settings_env,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]
TEST_API_KEY = "test-key-1"
ENCRYPTION_KEY = new_encryption_key()
BUCKET = "photoembed-test"
# what the moto server accepts (any credentials), for boto3 in this process and in children
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def weights_file() -> Path:
    """Random weights of the real ViT-B-32 (no hub here): kept between runs, made once (~5 s)."""
    path = REPO / ".cache" / "test-weights" / "vit-b-32-random.bin"
    random_weights(path)
    return path


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory, weights_file: Path) -> Path:
    """A Hugging Face cache holding those weights as the 'openai' tag's download."""
    cache = tmp_path_factory.mktemp("model-cache")
    seed_hf_cache(cache, weights_file)
    return cache


@pytest.fixture
def model_settings(tmp_path: Path, model_cache: Path) -> Settings:
    """Settings for loading the model in this process; no database or broker involved."""
    return Settings(
        env="dev",
        clip_cache_dir=model_cache,
        selfcheck_reference_dir=tmp_path / "references",
        clip_device="cpu",
    )


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    server = LocalPostgres(tmp_path_factory.mktemp("pg") / "data")
    migrate(server.start())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    server = LocalRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def stack_settings(
    folder: Path, postgres: LocalPostgres, redis_server: LocalRedis, model_cache: Path
) -> Settings:
    """Settings of one stack: shared database and Redis, its own queues, photos folder and port."""
    return Settings(
        env="production",
        database_url=postgres.url,
        redis_url=redis_server.url,
        storage_dir=folder / "photos",
        api_keys=[TEST_API_KEY],
        api_port=free_port(),
        clip_cache_dir=model_cache,
        selfcheck_reference_dir=folder / "references",
        queue_name=f"photos-{uuid.uuid4().hex[:8]}",
        face_queue_name=f"faces-{uuid.uuid4().hex[:8]}",
        webhook_queue_name=f"webhooks-{uuid.uuid4().hex[:8]}",
        encryption_key=ENCRYPTION_KEY,
        # the tests' receivers listen on loopback
        webhook_allow_private=True,
        # the face stage's own tests (and the kill -9 one) turn it on; elsewhere it would only
        # spend the CPU the tests of the CLIP stage measure
        faces_enabled=False,
        worker_threads=2,
    )


@pytest.fixture
def settings(
    tmp_path: Path, postgres: LocalPostgres, redis_server: LocalRedis, model_cache: Path
) -> Settings:
    """Settings of one test (see `stack_settings`)."""
    return stack_settings(tmp_path, postgres, redis_server, model_cache)


def new_database(postgres: LocalPostgres, prefix: str) -> str:
    """A new, migrated database on the shared server; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(
        postgres.url.replace("postgresql+psycopg", "postgresql"), autocommit=True
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = postgres.url.replace("/photoembed?", f"/{name}?")
    migrate(url)
    return url


@pytest.fixture
def own_database(postgres, settings):
    """A database of this test's own: the backfill covers every photo in it."""
    return settings.model_copy(update={"database_url": new_database(postgres, "switch")})


@pytest.fixture
def redis_client(redis_server: LocalRedis) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url)


class Services:
    """`photoembed <command>` child processes with given settings, their logs in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[ServiceProcess] = []

    def __call__(
        self, command: str, settings: Settings, *args: str, **overrides: str
    ) -> ServiceProcess:
        env = settings_env(settings)
        env.update(overrides)
        log_path = self.folder / f"{command}-{len(self.started)}.log"
        service = ServiceProcess([command, *args], env, log_path)
        self.started.append(service.start())
        return service

    def stop_all(self) -> None:
        for service in self.started:
            service.stop()


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Services]:
    """Start `photoembed <command>` with given settings; every process is stopped at the end."""
    services = Services(tmp_path)
    yield services
    services.stop_all()


def start_api(settings: Settings, start: Services) -> httpx.Client:
    """The real API (uvicorn) in its own process, and a client that sends the API key (the
    caller closes it)."""
    service = start("api", settings)
    service.wait_for_log("Uvicorn running on", timeout=60)
    return httpx.Client(
        base_url=f"http://127.0.0.1:{settings.api_port}",
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        timeout=30,
    )


@contextlib.contextmanager
def running_stack(settings: Settings, folder: Path) -> Iterator[httpx.Client]:
    """The real API and a real worker past its self-check, for a module's tests to share; both are
    stopped afterwards."""
    services = Services(folder)
    try:
        with start_api(settings, services) as client:
            services("worker", settings).wait_for_log("selfcheck.passed", timeout=180)
            yield client
    finally:
        services.stop_all()


@pytest.fixture
def api(settings: Settings, start_service: Services) -> Iterator[httpx.Client]:
    """The real API of this test's settings."""
    with start_api(settings, start_service) as client:
        yield client


@pytest.fixture
def http_client() -> Iterator[Callable[[int], httpx.Client]]:
    """Clients for an API started by the test, with the test key; closed afterwards (an unclosed
    one warns when it is collected, in whichever later test that happens)."""
    clients: list[httpx.Client] = []

    def open_client(port: int, timeout: float = 60) -> httpx.Client:
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {TEST_API_KEY}"},
            timeout=timeout,
        )
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3-compatible server (from PyPI) as a real HTTP server process on loopback."""
    port = free_port()
    log = (tmp_path_factory.mktemp("s3") / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(endpoint), timeout=60)
    s3_client(endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    process.terminate()
    process.wait(10)


def _answers(endpoint: str) -> bool:
    try:
        httpx.get(endpoint, timeout=1)
    except httpx.HTTPError:
        return False
    return True


def s3_client(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test-key",
        aws_secret_access_key="test-secret",
        region_name="us-east-1",
    )
