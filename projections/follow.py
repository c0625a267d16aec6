"""Following the log: one loop for every follower (the projection workers, the steering projector).

A follower catches up at once when woken: by a save in this process (``wake``, a ``ProfileLedger`` listener),
by PostgreSQL NOTIFY from other processes (the process's one LISTEN, :mod:`projections.wakeup`), and at the
latest after a bounded poll interval (a lost notification never blocks it; SQLite has none). While the
database cannot be reached it retries, backing off.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from eventsourcing.persistence import PersistenceError

from ledger.outages import is_database_unavailable
from ledger.settings import Database
from projections.log import EventLog
from projections.wakeup import Notifications

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
RETRY_SECONDS_MAX = 5.0


class Follower:
    """Calls :meth:`catch_up` whenever the log may have moved, until stopped."""

    poll_seconds_by_dialect = {"postgres": 2.0, "sqlite": 0.1}

    def __init__(self, database: Database, log: EventLog, *, poll_seconds: float | None = None,
                 notifications: Notifications | None = None) -> None:
        self.database = database
        self.log = log
        self.notifications = notifications  # the process's one LISTEN (PostgreSQL); else one of its own
        self.poll_seconds = poll_seconds or self.poll_seconds_by_dialect[
            "postgres" if database.is_postgres else "sqlite"]
        self._wake = threading.Event()

    def wake(self, position: int | None = None) -> None:
        """Look at the log now (cheap; callable from any thread, e.g. as a ``ProfileLedger`` listener)."""
        self._wake.set()

    def catch_up(self, stop: threading.Event | None = None) -> int:
        """Apply what was recorded since the last call; returns the position reached."""
        raise NotImplementedError

    def needs(self, position: int) -> bool:
        """Whether the log having reached ``position`` may leave this follower something to do."""
        return True

    def _notified(self, payload: str | None) -> None:
        """An insert's NOTIFY, its payload the last position inserted (None: something may have been missed)."""
        if payload is None or not payload.isdigit() or self.needs(int(payload)):
            self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Follow the log until ``stop`` is set, surviving database restarts (blocks)."""
        threading.Thread(target=lambda: (stop.wait(), self._wake.set()), daemon=True, name="follower-stop").start()
        own = None
        if self.database.is_postgres and self.log.channel:
            notifications = self.notifications or (own := Notifications(self.database.url))
            notifications.subscribe(self.log.channel, self._notified)
        try:
            retry = 0.1
            while not stop.is_set():
                self._wake.clear()
                try:
                    self.catch_up(stop)
                    retry = 0.1
                except Exception as error:
                    if not isinstance(error, (PersistenceError, OSError)) and not is_database_unavailable(error):
                        raise
                    logger.warning("%s: %s; retrying in %.1fs", type(self).__name__, error, retry)
                    stop.wait(retry)
                    retry = min(retry * 2, RETRY_SECONDS_MAX)
                    continue
                self._wake.wait(self.poll_seconds)
        finally:
            if own is not None:
                own.close()


class Consumer(Protocol):
    @property
    def position(self) -> int: ...

    def apply(self, position: int, event: Any) -> None: ...


class LogFollower(Follower):
    """Hands every event after the consumer's position to it, in order (an in-memory consumer such as the
    steering projector)."""

    def __init__(self, database: Database, consumer: Consumer, *, poll_seconds: float | None = None,
                 log: EventLog | None = None, notifications: Notifications | None = None) -> None:
        super().__init__(database, log or EventLog(database), poll_seconds=poll_seconds, notifications=notifications)
        self.consumer = consumer

    def head(self) -> int:
        return self.log.head()

    def needs(self, position: int) -> bool:
        return position > self.consumer.position

    def catch_up(self, stop: threading.Event | None = None) -> int:
        while True:
            batch = self.log.read(self.consumer.position, BATCH_SIZE)
            if not batch.events:
                return self.consumer.position
            for position, event in batch.events:
                self.consumer.apply(position, event)

    def close(self) -> None:
        self.log.close()
