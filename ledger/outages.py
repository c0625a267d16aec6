"""What an unreachable database looks like, for every delivery (the API answers 503, the CLI exits 75)."""

from __future__ import annotations

import re

import eventsourcing.persistence
import psycopg

DATABASE_UNAVAILABLE = (
    psycopg.OperationalError,  # includes psycopg_pool.PoolTimeout
    psycopg.InterfaceError,
    eventsourcing.persistence.OperationalError,
    eventsourcing.persistence.InterfaceError,
)


def is_database_unavailable(exc: BaseException) -> bool:
    """The error, or one it was raised from, says the database cannot be reached right now."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, DATABASE_UNAVAILABLE):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


_REFUSED_FOR_GOOD = re.compile(r"FATAL:\s+(.*(?:does not exist|authentication failed|no pg_hba\.conf entry).*)")


def refused_for_good(url: str) -> str | None:
    """Why a PostgreSQL server that answers refuses this URL in a way waiting will not change (no such database or
    role, a wrong password, not allowed from here); None when it cannot be reached, or lets the connection in."""
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError as error:
        found = _REFUSED_FOR_GOOD.search(str(error))
        return found.group(1).strip() if found else None
    return None
