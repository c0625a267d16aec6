"""What an unreachable database looks like, for every delivery (the API answers 503, the CLI exits 75)."""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import eventsourcing.persistence
import psycopg
from psycopg.conninfo import conninfo_to_dict
import psycopg_pool
import psycopg_pool.base

DATABASE_UNAVAILABLE = (
    psycopg.OperationalError,  # includes psycopg_pool.PoolTimeout
    psycopg.InterfaceError,
    eventsourcing.persistence.OperationalError,
    eventsourcing.persistence.InterfaceError,
)


class DatabaseFileGone(eventsourcing.persistence.OperationalError):
    """The SQLite file a process has open was deleted or replaced under it: what it wrote now would go to a file
    no one can open again (an answer of success for a write that is lost), so it writes nothing until restarted."""


class OpenedFile:
    """Which file an SQLite path named when a process opened it (device and inode), to notice the file deleted or
    replaced (a backup moved over it) under its open connections, which go on using the old one unseen."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.identity = self._identity()  # None: not made yet (the first connection makes it)

    def _identity(self) -> tuple[int, int] | None:
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            return None
        return found.st_dev, found.st_ino

    def check(self) -> None:
        """Raise :class:`DatabaseFileGone` when the path no longer names the file opened; call it with a connection
        open (the file then exists unless it was deleted)."""
        now = self._identity()
        if self.identity is None:
            self.identity = now
        if now is not None and now == self.identity:
            return
        raise DatabaseFileGone(
            f"the database file {self.path} was {'deleted' if now is None else 'replaced'} while this process had "
            "it open: it records nothing more (what it wrote would be lost); restart it")


RECONNECT_WAIT_MAX_S = 2.0
"""The longest a pool waits between two attempts to replace a connection it lost with the database."""


class _ReconnectAtLeastEveryFewSeconds(psycopg_pool.base.AttemptWithBackoff):
    """psycopg_pool doubles the wait between attempts to replace a lost connection, without a ceiling: a server
    whose database was away for a minute, and that had no traffic meanwhile, waited about as long again before its
    next attempt, answering 503 all the while. With a ceiling it is back within seconds of its database."""

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, RECONNECT_WAIT_MAX_S)


_check_one = psycopg_pool.pool.ConnectionPool._check_connection


def _check_and_sweep(pool: psycopg_pool.pool.ConnectionPool, conn: Any) -> None:
    """A connection handed out that fails its check (``POSTGRES_PRE_PING``) means the database went away since:
    the pool's other idle connections are broken too. psycopg_pool would check them one at a time, waiting a
    second, then two, between them, so a request after a restart ran out of time (503) with three of them left.
    They are all checked now instead, and the request waits only for a fresh connection."""
    try:
        _check_one(pool, conn)
    except Exception:
        pool.check()  # each broken one is replaced at once by the pool's workers
        raise


def recover_quickly_from_outages() -> None:
    """Make every connection pool of this process retry a lost database at least every few seconds, and drop
    all its broken connections at once when the first shows up."""
    psycopg_pool.pool.AttemptWithBackoff = _ReconnectAtLeastEveryFewSeconds  # type: ignore[misc]
    psycopg_pool.pool.ConnectionPool._check_connection = _check_and_sweep  # type: ignore[method-assign]


def raised_from(exc: BaseException, *, implicitly: bool = False) -> Iterator[BaseException]:
    """The error and those it was raised from (``implicitly``: or while handling), each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        yield current
        seen.add(id(current))
        current = current.__cause__ or (current.__context__ if implicitly else None)


def waited_for_a_connection(exc: BaseException) -> bool:
    """The error, or one it was raised from, is a wait for a pooled connection that ran out of time."""
    return any(isinstance(error, (psycopg_pool.PoolTimeout, eventsourcing.persistence.ConnectionUnavailableError))
               for error in raised_from(exc, implicitly=True))


def pool_exhausted(datastore: Any) -> bool:
    """Every connection the datastore's pool may open is open and in use: a wait for one that runs out then means
    the server is busy, not that its database is away (a pool that cannot reach it has fewer open)."""
    pool = datastore.pool
    if isinstance(pool, psycopg_pool.ConnectionPool):
        stats = pool.get_stats()
        return stats.get("pool_size", 0) >= stats.get("pool_max", 1) and not stats.get("pool_available")
    return bool(pool._is_use_full)  # the library's pool of SQLite connections (a file is always there)


def out_of_space(exc: BaseException) -> bool:
    """The error, or one it was raised from, says the database has no room to write: its disk is full (SQLite's
    SQLITE_FULL, PostgreSQL's disk_full). Writes fail until space is freed; reads go on."""
    return any(getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
               or isinstance(error, psycopg.errors.DiskFull) for error in raised_from(exc, implicitly=True))


def is_database_unavailable(exc: BaseException) -> bool:
    """The error, or one it was raised from, says the database cannot be reached right now."""
    return any(isinstance(error, DATABASE_UNAVAILABLE) for error in raised_from(exc))


def first_line(exc: BaseException) -> str:
    """What the error says, in one line (its type's name when it says nothing)."""
    return str(exc).strip().partition("\n")[0] or type(exc).__name__


def refuses_writes(exc: BaseException) -> bool:
    """The error, or one it was raised from, says the database takes no writes: a read-only PostgreSQL transaction
    (a hot standby, ``default_transaction_read_only``), an SQLite file that cannot be written. Queries go on."""
    return any(isinstance(error, psycopg.errors.ReadOnlySqlTransaction)
               or getattr(error, "sqlite_errorcode", -1) & 0xFF == sqlite3.SQLITE_READONLY
               for error in raised_from(exc, implicitly=True))


_NO_SUCH_TABLE = re.compile(r'no such table: (\S+)|relation "([^"]+)" does not exist')
_NO_SUCH_COLUMN = re.compile(r'no such column: (\S+)|column "?([^"\s]+)"? does not exist')


def missing_table(exc: BaseException) -> str | None:
    """The table a query found missing (dropped by hand, say), from the error or one it was raised from; None when
    that is not what went wrong."""
    for error in raised_from(exc, implicitly=True):
        found = _NO_SUCH_TABLE.search(str(error))
        if found:
            return found.group(1) or found.group(2)
    return None


def missing_column(exc: BaseException) -> str | None:
    """The column a query found missing (its table made by another version of the ledger, not yet made again), from
    the error or one it was raised from; None when that is not what went wrong."""
    for error in raised_from(exc, implicitly=True):
        found = _NO_SUCH_COLUMN.search(str(error))
        if found:
            return found.group(1) or found.group(2)
    return None


_REFUSED_FOR_GOOD = re.compile(r"FATAL:\s+(.*(?:does not exist|authentication failed|no pg_hba\.conf entry).*)"
                               r"|(server does not support SSL.*|invalid \w+ value.*|fe_sendauth: .*)")


def refused_for_good(url: str) -> str | None:
    """Why a PostgreSQL server that answers refuses this URL in a way waiting will not change (no such database or
    role, a wrong or missing password, not allowed from here, TLS it requires and the server lacks, a parameter it
    cannot use); None when it cannot be reached, or lets the connection in."""
    try:
        timeout = {} if "connect_timeout" in conninfo_to_dict(url) else {"connect_timeout": 3}  # (the URL's own first)
        psycopg.connect(url, **timeout).close()
    except psycopg.ProgrammingError as error:  # a URL it cannot use: an unknown parameter
        return str(error).strip()
    except psycopg.OperationalError as error:
        found = _REFUSED_FOR_GOOD.search(str(error))
        return (found.group(1) or found.group(2)).strip() if found else None
    return None
