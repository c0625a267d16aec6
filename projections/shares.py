"""Who holds a server's database connections and event streams: each client's share of them."""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from projections.errors import ReadShareError

reader: contextvars.ContextVar[str | None] = contextvars.ContextVar("reader", default=None)
"""Whom this context's queries and event stream are for (the API sets it for each request: the token's holder,
else the client's address); None: nobody's share is kept (the CLI, the projection workers)."""


def connections_of(datastore: Any) -> int:
    """How many connections the datastore's pool opens at most."""
    pool = datastore.pool
    return int(getattr(pool, "max_size", None) or pool.pool_size + pool.max_overflow)


class Shares:
    """Places of one kind a server has (the database connections the read models are queried over, its event
    streams) held now, by client. A client never holds more than three quarters of them (the rest serve the others
    at once), and while every place is held, a client holding an equal part of them is refused too. A refusal is
    at once (:class:`ReadShareError`, 429), never a wait: one client's costly queries or idle streams cannot take
    every place, leaving the others' requests to fail."""

    def __init__(self, places: int, what: str = "database connections") -> None:
        self.places, self.what = places, what
        self.most = max(1, places * 3 // 4)  # any one client's
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, who: str | None) -> None:
        """One more place for ``who`` (None: nobody's share is kept), unless it holds its share of them now."""
        if who is None:
            return
        with self._lock:
            equal = max(1, self.places // (len(self._held) + (who not in self._held)))
            held = self._held[who]
            if held >= self.most or sum(self._held.values()) >= self.places and held >= equal:
                raise ReadShareError(
                    f"this client already holds {held} of this server's {self.places} {self.what}, its share of "
                    "them now: retry in a moment")
            self._held[who] += 1

    def give_back(self, who: str | None) -> None:
        if who is None:
            return
        with self._lock:
            self._held[who] -= 1
            if not self._held[who]:
                del self._held[who]

    @contextlib.contextmanager
    def taken(self) -> Iterator[None]:
        """A place for this context's :data:`reader` while the block runs."""
        who = reader.get()
        self.take(who)
        try:
            yield
        finally:
            self.give_back(who)
