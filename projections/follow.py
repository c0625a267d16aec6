"""Following the log with an in-memory consumer (such as the steering projector).

The consumer sees every event after its position, in order, woken at once by saves in this process
(``wake``, a ``ProfileLedger`` listener), by PostgreSQL NOTIFY from other processes, and at the latest after a
bounded poll interval (a lost notification never blocks it).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from eventsourcing.persistence import PersistenceError

from ledger.settings import Database
from projections.log import EventLog
from projections.wakeup import Notifications

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
POLL_SECONDS = {"postgres": 2.0, "sqlite": 0.1}


class Consumer(Protocol):
    @property
    def position(self) -> int: ...

    def apply(self, position: int, event: Any) -> None: ...


class LogFollower:
    def __init__(
        self, database: Database, consumer: Consumer, *, poll_seconds: float | None = None, log: EventLog | None = None,
        notifications: Notifications | None = None,
    ) -> None:
        self.database = database
        self.consumer = consumer
        self.log = log or EventLog(database)
        self.notifications = notifications  # the process's one LISTEN (PostgreSQL); else one of its own
        self.poll_seconds = poll_seconds or POLL_SECONDS["postgres" if database.is_postgres else "sqlite"]
        self._wake = threading.Event()

    def head(self) -> int:
        return self.log.head()

    def wake(self, position: int | None = None) -> None:
        self._wake.set()

    def catch_up(self) -> int:
        while True:
            batch = self.log.read(self.consumer.position, BATCH_SIZE)
            if not batch.events:
                return self.consumer.position
            for position, event in batch.events:
                self.consumer.apply(position, event)

    def run(self, stop: threading.Event) -> None:
        own = None
        if self.database.is_postgres and self.log.channel:
            notifications = self.notifications or (own := Notifications(self.database.url))
            notifications.subscribe(self.log.channel, lambda _: self._wake.set())
        try:
            self._follow(stop)
        finally:
            if own is not None:
                own.close()

    def _follow(self, stop: threading.Event) -> None:
        threading.Thread(target=lambda: (stop.wait(), self._wake.set()), daemon=True).start()
        retry = 0.1
        while not stop.is_set():
            self._wake.clear()
            try:
                self.catch_up()
                retry = 0.1
            except PersistenceError as error:
                logger.warning("log follower: %s; retrying in %.1fs", error, retry)
                stop.wait(retry)
                retry = min(retry * 2, 5.0)
                continue
            self._wake.wait(self.poll_seconds)

    def close(self) -> None:
        self.log.close()
