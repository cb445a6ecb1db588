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

from psycopg.errors import ReadOnlySqlTransaction
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

POOL_OVERFLOW = 2  # the sweeper and the health check, beside the threads
_pool_size = 5


def set_pool_size(size: int) -> None:
    global _pool_size
    _pool_size = max(1, size)


@lru_cache(maxsize=4)
def get_engine(database_url: str) -> Engine:
    """Connections are checked before use (a restarted or switched-over server is reconnected);
    DATABASE_URL may name several hosts with target_session_attrs=read-write (libpq then connects
    to whichever is the primary now)."""
    engine = create_engine(
        database_url, pool_pre_ping=True, pool_size=_pool_size, max_overflow=POOL_OVERFLOW
    )
    event.listen(engine, "handle_error", _demoted_primary_is_a_lost_connection)
    return engine


def _demoted_primary_is_a_lost_connection(context: ExceptionContext) -> None:
    """After a switchover a pooled connection may still reach the old primary, now a standby,
    where a write fails read-only (and SELECT 1 still passes the pre-ping). Treated as a lost
    connection the pool is emptied, the next connection finds the new primary, and the error is
    the OperationalError the API answers 503 and the worker retries."""
    if isinstance(context.original_exception, ReadOnlySqlTransaction):
        context.is_disconnect = True
        raise OperationalError(
            context.statement,
            context.parameters,
            context.original_exception,
            connection_invalidated=True,
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


def replica_lag_seconds(database_url: str) -> float:
    """How far a streaming replica is behind: 0 when it has replayed all the WAL it received
    (or is no replica), else the age of the last transaction it replayed."""
    with get_engine(database_url).connect() as connection:
        lag = connection.execute(
            text(
                "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 "
                "WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
                "ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END"
            )
        ).scalar_one()
    return float(lag or 0)


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
