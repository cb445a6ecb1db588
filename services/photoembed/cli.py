"""`photoembed`: the command line of the product (see README for each command)."""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from photoembed.clip.errors import ModelLoadError
from photoembed.config import Settings, get_settings, settings_table
from photoembed.logging import configure_logging, get_logger

log = get_logger("photoembed.cli")

REPO_ROOT = Path(__file__).resolve().parents[2]


def migrations_dir() -> Path:
    for candidate in (REPO_ROOT / "migrations", Path.cwd() / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise SystemExit("cannot find the migrations/ folder (run from the repository root)")


def migrate(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(config, "head")
    log.info("db.migrated", revision="head")


def api_processes(settings: Settings) -> int:
    """API_WORKERS, or half the cores (at most 8) beside the workers: one process parses uploads
    on one core."""
    return settings.api_workers or max(1, min(8, (os.cpu_count() or 1) // 2))


def run_api(settings: Settings) -> None:
    import uvicorn

    processes = api_processes(settings)
    log.info(
        "api.starting", url=f"http://{settings.api_host}:{settings.api_port}", processes=processes
    )
    options = {
        "host": settings.api_host,
        "port": settings.api_port,
        "log_config": None,
        "access_log": False,
    }
    if processes == 1:
        from photoembed.api.app import create_app

        uvicorn.run(create_app(settings), **options)  # type: ignore[arg-type]
        return
    # Several processes (uvicorn's supervisor): each builds the app from the environment, and
    # their metrics are added up from files in one folder.
    metrics_dir = _fresh_metrics_dir(
        settings.worker_metrics_dir.with_name(f"photoembed-api-metrics-{settings.api_port}")
    )
    os.environ.update(settings.environment(), PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    uvicorn.run(
        "photoembed.api.app:create_app_from_env",
        factory=True,
        workers=processes,
        **options,  # type: ignore[arg-type]
    )


def _fresh_metrics_dir(path: Path) -> Path:
    """Set before any process imports prometheus_client, emptied so no stale values survive."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def worker_command(settings: Settings) -> list[str]:
    return [
        sys.executable, "-m", "dramatiq", "photoembed.worker.actors",
        "--processes", str(settings.worker_processes),
        "--threads", str(settings.worker_threads),
        "--queues", settings.queue_name,
        "--skip-logging",
    ]  # fmt: skip


def check_connection_budget(settings: Settings) -> None:
    """Say at start when this worker's processes may open more connections than the server
    allows (they would fail with "too many clients" under load)."""
    from photoembed.db import check_budget

    try:
        budget = check_budget(
            settings.database_url, settings.worker_processes, settings.db_pool_size
        )
    except Exception as exc:
        log.warning("db.connection_budget_unknown", error=f"{type(exc).__name__}: {exc}")
        return
    fields = {
        "processes": settings.worker_processes,
        "pool_per_process": settings.db_pool_size,
        "wanted": budget.wanted,
        "max_connections": budget.max_connections,
        "reserved": budget.reserved,
        "in_use_now": budget.in_use,
    }
    if budget.exceeded:
        log.error(
            "db.connection_budget_exceeded",
            fix="lower WORKER_PROCESSES or DB_POOL_SIZE, or raise the server's max_connections",
            **fields,
        )
    else:
        log.info("db.connection_budget", **fields)


def run_worker(settings: Settings) -> None:
    from photoembed.sizing import resolve

    if settings.log_format == "auto":  # dramatiq pipes the children's stderr: decide here
        os.environ["LOG_FORMAT"] = "console" if sys.stderr.isatty() else "json"
    settings = resolve(settings)
    check_connection_budget(settings)
    # Every worker process writes its metrics here; Dramatiq's exposition server reads them all.
    metrics_dir = _fresh_metrics_dir(settings.worker_metrics_dir)
    os.environ.update(
        # The children get the sizes decided here, not their own guesses.
        {name: value for name, value in settings.environment().items() if name in _RESOLVED},
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        dramatiq_prom_db=str(metrics_dir),
        dramatiq_prom_host=settings.metrics_host,
        dramatiq_prom_port=str(settings.metrics_port),
    )
    command = worker_command(settings)
    os.execv(command[0], command)


_RESOLVED = {
    "CLIP_DEVICE", "EMBED_RUNTIME", "CLIP_PRECISION", "WORKER_PROCESSES", "WORKER_THREADS",
    "EMBED_BATCH_SIZE", "TORCH_THREADS", "DB_POOL_SIZE", "JPEG_DECODER",
}  # fmt: skip


def run_selfcheck(settings: Settings, record: bool) -> int:
    from photoembed.clip.factory import image_embedder
    from photoembed.clip.selfcheck import run_selfcheck as check
    from photoembed.sizing import resolve

    settings = resolve(settings)
    result = check(settings, image_embedder(settings), record=record)
    for finding in result.findings:
        log.error("selfcheck.failed", code=finding.code, finding=finding.message)
    if not result.ok:
        return 1
    if result.recorded:
        log.info("selfcheck.recorded", model=result.identity, reference=str(result.reference_path))
    log.info("selfcheck.passed", model=result.identity)
    return 0


def run_sweep(settings: Settings) -> int:
    from photoembed.queue import build_broker
    from photoembed.worker.sweeper import sweep_once

    result = sweep_once(settings, build_broker(settings))
    log.info("sweeper.done", pending=result.resent_pending, expired_lease=result.resent_expired)
    return 0


def parse_since(value: str) -> datetime:
    """An ISO time, or an age such as 30m, 2h, 7d."""
    match = re.fullmatch(r"(\d+)([smhd])", value.strip())
    if match:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return datetime.now(UTC) - timedelta(seconds=seconds)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def run_retry(settings: Settings, args: argparse.Namespace) -> int:
    from photoembed import repository
    from photoembed.db import session_scope
    from photoembed.photos import retry_failed
    from photoembed.queue import build_broker

    with session_scope(settings.database_url) as session:
        ids = repository.failed_photos(
            session, since=args.since, error_contains=args.error_contains, limit=args.limit
        )
    if args.dry_run:
        print(f"{len(ids)} FAILED photo(s) would be retried")
        return 0
    retried = retry_failed(settings, build_broker(settings), ids)
    print(f"{len(retried)} FAILED photo(s) sent again")
    return 0


def _get_local(url: str) -> str:
    """GET an http://127.0.0.1 URL of this machine's own services (never a user's URL)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (fixed http URL)
        body: str = response.read().decode()
        return body


def run_health(settings: Settings, component: str) -> int:
    """For container health checks, with nothing but this command in the image: `api` is this
    machine's API answering /readyz; `worker` is its worker past the self-check, read from its
    metrics, so that a health check never loads a second model (on a GPU, a second copy)."""
    import urllib.error

    if component == "api":
        url = f"http://127.0.0.1:{settings.api_port}/readyz"
        try:
            print(f"api ready: {_get_local(url)}")
            return 0
        except urllib.error.HTTPError as exc:
            print(f"api not ready: {exc.code} {exc.read().decode()}")
        except OSError as exc:
            print(f"api at {url} unreachable: {exc}")
        return 1
    url = f"http://127.0.0.1:{settings.metrics_port}/"
    try:
        text = _get_local(url)
    except OSError as exc:
        print(f"worker metrics at {url} unreachable: {exc}")
        return 1
    ready = re.search(r"^photoembed_worker_ready(?:\{[^}]*\})? ([0-9.e+-]+)$", text, re.M)
    if ready is None or float(ready.group(1)) < 1:
        print("no worker process has passed its self-check yet")
        return 1
    print("worker ready")
    return 0


def run_logcheck(path: Path) -> int:
    from photoembed.logcheck import check_file

    problems = check_file(path)
    for problem in problems:
        print(f"{path}:{problem.line_number}: {problem.line[:500]}")
    print(f"logcheck: {len(problems)} model-loading warning(s) or error(s) in {path}")
    return 1 if problems else 0


def run_backfill_command(settings: Settings, args: argparse.Namespace) -> int:
    from photoembed.backfill import enqueue_backfill, run_backfill
    from photoembed.clip.factory import image_embedder
    from photoembed.sizing import resolve

    settings = resolve(settings)
    embedder = image_embedder(settings)
    if args.enqueue:
        enqueue_backfill(settings, embedder.load().identity, all_statuses=args.all)
        return 0
    result = run_backfill(
        settings,
        embedder,
        batch_size=args.batch_size,
        all_statuses=args.all,
        dry_run=args.dry_run,
    )
    if args.dry_run:
        print(f"{result.missing} photo(s) have no vector of {result.model}")
    return 1 if result.failed else 0


def model_info(settings: Settings) -> int:
    from photoembed.clip.backends import active_identity, plan_for

    try:
        plan = plan_for(settings)
        identity = active_identity(settings)
    except ModelLoadError as exc:
        print(json.dumps({"loadable": False, "error": str(exc)}, indent=2))
        return 1
    print(json.dumps({"loadable": True, "identity": identity, **plan.describe()}, indent=2))
    return 0


def model_download(settings: Settings) -> int:
    from photoembed.clip.weights_files import download_weights

    path, meta = download_weights(settings)
    log.info("model.downloaded", path=str(path), sha256=meta.sha256, quick_gelu=meta.quick_gelu)
    return 0


def model_export(settings: Settings, output: Path) -> int:
    from photoembed.clip.runtimes.torch_runtime import ClipEmbedder
    from photoembed.clip.weights_files import export_weights

    meta = export_weights(ClipEmbedder(settings).load(), output)
    log.info("model.exported", path=str(output), sha256=meta.sha256, quick_gelu=meta.quick_gelu)
    return 0


def model_onnx(settings: Settings) -> int:
    from photoembed.clip.onnx_export import ensure_onnx

    path = ensure_onnx(settings)
    print(json.dumps({"onnx": str(path)}))
    return 0


def _dev_api_key(home: Path) -> str:
    key_file = home / "api-key"
    if not key_file.is_file():
        key_file.write_text(secrets.token_urlsafe(24) + "\n")
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def _dev_weights(env: dict[str, str], home: Path) -> None:
    """Use the configured weights when they are here; otherwise demo weights, said out loud."""
    from photoembed.clip.errors import WeightsNotFoundError
    from photoembed.clip.weights_files import write_random_weights
    from photoembed.clip.backends.openclip import plan_model

    fields = {k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields}
    settings = Settings.model_validate(fields)
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
    if not demo.is_file():
        write_random_weights(demo, settings.clip_model_name)
    env["CLIP_PRETRAINED"] = str(demo)
    env["CLIP_QUICK_GELU"] = "auto"
    log.warning(
        "model.demo_weights",
        weights=str(demo),
        reason=missing,
        meaning="the pipeline runs end to end, but these embeddings are random and meaningless",
        fix="run `photoembed model download` where the hub is reachable, then restart",
    )


def run_dev(home: Path) -> int:
    """Everything on one machine: embedded Postgres, Redis, migrations, the API and the worker."""
    from photoembed.devstack import LocalPostgres, LocalRedis

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
        env.update(
            ENV="dev",
            DATABASE_URL=postgres.start(),
            REDIS_URL=redis_server.start(),
            STORAGE_DIR=env.get("STORAGE_DIR", str(home / "photos")),
            CLIP_CACHE_DIR=env.get("CLIP_CACHE_DIR", str(home / "models")),
            API_KEYS=env.get("API_KEYS") or _dev_api_key(home),
        )
        migrate(env["DATABASE_URL"])
        _dev_weights(env, home)
        photoembed = [sys.executable, "-m", "photoembed.cli"]
        children.extend(
            subprocess.Popen([*photoembed, name], env=env) for name in ("api", "worker")
        )
        port = env.get("API_PORT", "8000")
        log.info(
            "dev.running",
            api=f"http://127.0.0.1:{port}",
            docs=f"http://127.0.0.1:{port}/docs",
            api_key_file=str(home / "api-key") if "API_KEYS" not in os.environ else "from API_KEYS",
            data=str(home),
            stop="Ctrl-C",
        )
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.5)
        failed = [str(child.args) for child in children if child.poll() not in (None, 0)]
        if failed:
            log.error("dev.child_exited", commands=failed)
            return 1
        return 0
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="photoembed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="run everything on this machine (embedded Postgres, Redis)")
    dev.add_argument(
        "--home", type=Path, default=Path(os.environ.get("PHOTOEMBED_HOME", ".photoembed"))
    )
    sub.add_parser("api", help="run the HTTP API")
    sub.add_parser("worker", help="run the Dramatiq worker (self-check first)")
    sub.add_parser("migrate", help="apply the Alembic migrations to DATABASE_URL")
    logcheck = sub.add_parser("logcheck", help="exit 1 if a log shows model-loading warnings")
    logcheck.add_argument("file", type=Path)
    backfill = sub.add_parser("backfill", help="give every photo a vector of the active model")
    backfill.add_argument("--dry-run", action="store_true", help="only count what is missing")
    backfill.add_argument("--all", action="store_true", help="every photo, not only READY ones")
    backfill.add_argument("--batch-size", type=int, default=16)
    backfill.add_argument("--enqueue", action="store_true", help="send the work to the workers")
    sub.add_parser("settings", help="print the settings table (name, type, default)")
    retry = sub.add_parser("retry", help="send FAILED photos round again (after fixing the cause)")
    retry.add_argument("--failed", action="store_true", required=True, help="FAILED photos")
    retry.add_argument("--since", type=parse_since, help="failed since: ISO time, or 30m, 2h, 7d")
    retry.add_argument("--error-contains", help="only those whose error contains this text")
    retry.add_argument("--limit", type=int, default=100_000)
    retry.add_argument("--dry-run", action="store_true", help="only count them")
    health = sub.add_parser(
        "health",
        help="exit 0 once this machine's worker passed its self-check (no model load), or its "
        "API is ready",
    )
    health.add_argument("component", nargs="?", choices=["worker", "api"], default="worker")
    sub.add_parser("sweep", help="re-send lost photos once (the worker also does it periodically)")
    check = sub.add_parser("selfcheck", help="run the model self-check alone; exit 0 or 1")
    check.add_argument("--record", action="store_true", help="record the reference vector")
    model = sub.add_parser("model", help="model weights").add_subparsers(
        dest="model_command", required=True
    )
    model.add_parser("info", help="what would be loaded, from where, with which activation")
    model.add_parser("download", help="fetch the configured weights into CLIP_CACHE_DIR")
    export = model.add_parser("export", help="save the loaded model to a file with its metadata")
    export.add_argument("--output", type=Path, required=True)
    model.add_parser(
        "onnx",
        help="export the image tower to ONNX for EMBED_RUNTIME=onnx (once per weights); prints "
        "the file as JSON",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "settings":
        print(settings_table())
        return 0
    if args.command == "logcheck":
        return run_logcheck(args.file)
    if args.command == "dev":
        configure_logging(os.environ.get("LOG_FORMAT", "auto"), "INFO")  # type: ignore[arg-type]
        return run_dev(args.home)
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    try:
        if args.command == "api":
            run_api(settings)
        elif args.command == "worker":
            run_worker(settings)
        elif args.command == "migrate":
            migrate(settings.database_url)
        elif args.command == "backfill":
            return run_backfill_command(settings, args)
        elif args.command == "sweep":
            return run_sweep(settings)
        elif args.command == "retry":
            return run_retry(settings, args)
        elif args.command == "health":
            return run_health(settings, args.component)
        elif args.command == "selfcheck":
            return run_selfcheck(settings, args.record)
        elif args.model_command == "info":
            return model_info(settings)
        elif args.model_command == "download":
            return model_download(settings)
        elif args.model_command == "onnx":
            return model_onnx(settings)
        else:
            return model_export(settings, args.output)
    except ModelLoadError as exc:
        log.error("model.unavailable", error=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
