"""Who holds the database connections the read models are queried over: each reader's share of them."""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from projections.errors import ReadShareError

reader: contextvars.ContextVar[str | None] = contextvars.ContextVar("reader", default=None)
"""Whom the queries of this context are for (the API sets it for each request: the token's holder, else the
client's address); None: nobody's share is kept (the CLI, the projection workers)."""


def connections_of(datastore: Any) -> int:
    """How many connections the datastore's pool opens at most."""
    pool = datastore.pool
    return int(getattr(pool, "max_size", None) or pool.pool_size + pool.max_overflow)


class ReadShares:
    """The queries of the read models running (or waiting for a connection) now, by reader. A reader never holds
    more than three quarters of the connections (the rest serve other clients, commands and the reads of the log
    at once), and while the queries running take every connection, a reader holding an equal part of them is
    refused too. A refusal is at once (:class:`ReadShareError`, 429), never a wait: one client's costly queries
    cannot take every connection, and every request thread with them, leaving the others' reads to fail."""

    def __init__(self, connections: int) -> None:
        self.connections = connections
        self.most = max(1, connections * 3 // 4)  # any one reader's
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def taken(self) -> Iterator[None]:
        who = reader.get()
        if who is None:
            yield
            return
        with self._lock:
            equal = max(1, self.connections // (len(self._held) + (who not in self._held)))
            held = self._held[who]
            if held >= self.most or sum(self._held.values()) >= self.connections and held >= equal:
                raise ReadShareError(
                    f"this client's reads already hold {held} of this server's {self.connections} "
                    "database connections, its share of them now: retry in a moment")
            self._held[who] += 1
        try:
            yield
        finally:
            with self._lock:
                self._held[who] -= 1
                if not self._held[who]:
                    del self._held[who]
