"""`photoembed dev`: everything on one machine — embedded Postgres with pgvector, Redis, the
migrations, the API and the worker — with demo weights where no real ones are cached."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from photoembed.cli.common import log
from photoembed.cli.database import migrate
from photoembed.config import Settings
from photoembed.logging import configure_logging


def _dev_api_key(home: Path) -> str:
    key_file = home / "api-key"
    if not key_file.is_file():
        key_file.write_text(secrets.token_urlsafe(24) + "\n")
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def _dev_encryption_key(home: Path) -> str:
    """The key webhook secrets are kept encrypted with (`photoembed secret-key`), kept here."""
    from photoembed.webhooks.secrets import new_encryption_key

    key_file = home / "encryption-key"
    if not key_file.is_file():
        key_file.write_text(new_encryption_key() + "\n")
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def _dev_weights(env: dict[str, str], home: Path) -> None:
    """Use the configured weights when they are here; otherwise demo weights, said out loud."""
    from photoembed.clip.backends.openclip import plan_model
    from photoembed.clip.errors import WeightsNotFoundError
    from photoembed.clip.weights_files import ensure_random_weights

    settings = _settings_of(env)
    try:
        plan_model(
            settings.clip_model_name,
            settings.clip_pretrained,
            settings.clip_cache_dir,
            settings.quick_gelu_override,
        )
        return
    except WeightsNotFoundError as exc:
        missing = str(exc)
    demo = home / "models" / f"demo-{settings.clip_model_name}-random-init.bin"
    ensure_random_weights(demo, settings.clip_model_name)
    env["CLIP_PRETRAINED"] = str(demo)
    env["CLIP_QUICK_GELU"] = "auto"
    log.warning(
        "model.demo_weights",
        weights=str(demo),
        reason=missing,
        meaning="the pipeline runs end to end, but these embeddings are random and meaningless",
        fix="run `photoembed model download` where the hub is reachable, then restart",
    )


def _settings_of(env: dict[str, str]) -> Settings:
    return Settings.model_validate(
        {k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields}
    )


def _wait_until_serving(
    settings: Settings, children: list[subprocess.Popen[bytes]], stopping: Callable[[], bool]
) -> bool:
    """Until the API answers /readyz and a worker process has passed its self-check (on the
    first start that includes exporting the model to ONNX), so that a photo uploaded once
    `dev.running` is said is embedded at once. False when a child exits or Ctrl-C comes first."""
    from photoembed.cli.serve import api_health, worker_health

    while not stopping() and all(child.poll() is None for child in children):
        if api_health(settings)[0] and worker_health(settings)[0]:
            return True
        time.sleep(0.5)
    return False


def run_dev(home: Path) -> int:
    """Everything on one machine: embedded Postgres, Redis, migrations, the API and the worker."""
    configure_logging(os.environ.get("LOG_FORMAT", "auto"), "INFO")  # type: ignore[arg-type]
    from photoembed.devstack import (
        LocalPostgres,
        LocalRedis,
        machine_memory,
        postgres_memory_settings,
    )

    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # dev never waits on a hub; `model download` does
    postgres = LocalPostgres(home / "postgres")
    redis_server = LocalRedis(home / "redis", port=int(os.environ.get("DEV_REDIS_PORT", "6390")))
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        env = dict(os.environ)
        database_url = postgres.start()
        postgres.configure(postgres_memory_settings(machine_memory(), os.cpu_count() or 1))
        env.update(
            ENV="dev",
            DATABASE_URL=database_url,
            REDIS_URL=redis_server.start(),
            STORAGE_DIR=env.get("STORAGE_DIR", str(home / "photos")),
            CLIP_CACHE_DIR=env.get("CLIP_CACHE_DIR", str(home / "models")),
            API_KEYS=env.get("API_KEYS") or _dev_api_key(home),
            ENCRYPTION_KEY=env.get("ENCRYPTION_KEY") or _dev_encryption_key(home),
            # a receiver on this machine (loopback) is what a developer tries webhooks with
            WEBHOOK_ALLOW_PRIVATE=env.get("WEBHOOK_ALLOW_PRIVATE", "true"),
        )
        migrate(env["DATABASE_URL"])
        _dev_weights(env, home)
        photoembed = [sys.executable, "-m", "photoembed.cli"]
        started = time.monotonic()
        children.extend(
            subprocess.Popen([*photoembed, name], env=env) for name in ("api", "worker")
        )
        log.info(
            "dev.starting",
            first_start="exports the model to ONNX once (about a minute on 2 cores); later "
            "starts take seconds",
        )
        if not _wait_until_serving(_settings_of(env), children, lambda: stopping):
            return _ended(children)
        port = env.get("API_PORT", "8000")
        log.info(
            "dev.running",
            ready_after_s=round(time.monotonic() - started, 1),
            api=f"http://127.0.0.1:{port}",
            docs=f"http://127.0.0.1:{port}/docs",
            api_key_file=str(home / "api-key") if "API_KEYS" not in os.environ else "from API_KEYS",
            data=str(home),
            stop="Ctrl-C",
        )
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.5)
        return _ended(children)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        redis_server.stop()
        postgres.stop()
        log.info("dev.stopped")


def _ended(children: list[subprocess.Popen[bytes]]) -> int:
    failed = [str(child.args) for child in children if child.poll() not in (None, 0)]
    if failed:
        log.error("dev.child_exited", commands=failed)
        return 1
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = commands.add_parser(
        "dev", help="run everything on this machine (embedded Postgres, Redis)"
    )
    dev.add_argument(
        "--home", type=Path, default=Path(os.environ.get("PHOTOEMBED_HOME", ".photoembed"))
    )
    dev.set_defaults(run=lambda args: run_dev(args.home))
