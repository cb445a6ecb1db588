"""Engine and sessions. One engine per process, created on first use (never before a fork).

A process's pool is sized from its threads (`sizing.plan_sizing`): `set_pool_size` runs before the
first engine is made. The budget of a machine is processes x (pool + overflow); `check_budget` says
when it exceeds what the server allows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

POOL_OVERFLOW = 2  # the sweeper and the health check, beside the threads
_pool_size = 5


def set_pool_size(size: int) -> None:
    global _pool_size
    _pool_size = max(1, size)


@lru_cache(maxsize=4)
def get_engine(database_url: str) -> Engine:
    return create_engine(
        database_url, pool_pre_ping=True, pool_size=_pool_size, max_overflow=POOL_OVERFLOW
    )


@lru_cache(maxsize=4)
def get_sessionmaker(database_url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(database_url), expire_on_commit=False)


@contextmanager
def session_scope(database_url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on any exception."""
    session = get_sessionmaker(database_url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def ping(database_url: str) -> None:
    with get_engine(database_url).connect() as connection:
        connection.execute(text("SELECT 1"))


@dataclass(frozen=True)
class ConnectionBudget:
    wanted: int
    max_connections: int
    reserved: int
    in_use: int

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved

    @property
    def exceeded(self) -> bool:
        return self.wanted > self.available


def connection_usage(database_url: str) -> ConnectionBudget:
    """The server's limit and the connections open on it now (`wanted` left at 0)."""
    with get_engine(database_url).connect() as connection:
        max_connections = int(connection.execute(text("SHOW max_connections")).scalar_one())
        reserved = int(connection.execute(text("SHOW superuser_reserved_connections")).scalar_one())
        in_use = int(connection.execute(text("SELECT count(*) FROM pg_stat_activity")).scalar_one())
    return ConnectionBudget(
        wanted=0, max_connections=max_connections, reserved=reserved, in_use=in_use
    )


def check_budget(database_url: str, processes: int, pool_size: int) -> ConnectionBudget:
    """What `processes` processes with this pool may open, against the server's limit."""
    usage = connection_usage(database_url)
    return replace(usage, wanted=processes * (pool_size + POOL_OVERFLOW))
