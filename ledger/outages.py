"""What an unreachable database looks like, for every delivery (the API answers 503, the CLI exits 75)."""

from __future__ import annotations

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
