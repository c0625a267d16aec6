"""Waking followers of the log when something is recorded: one PostgreSQL ``LISTEN`` connection per process.

Every follower in a process (the projection worker, the steering projector, the active-profile cache, the
read side's progress) subscribes to a channel of the process's one :class:`Notifications` instead of holding
a connection of its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

logger = logging.getLogger(__name__)

NOTIFY_WAIT_SECONDS = 0.5
RECONNECT_SECONDS = 1.0

Subscriber = Callable[[str | None], None]
"""Called with a notification's payload, or with None when anything may have been missed (on every
(re)connection): it must only note the fact (set an event), never block."""


class Notifications:
    def __init__(self, url: str) -> None:
        self.url = url
        self._subscribers: dict[str, list[Subscriber]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, channel: str, subscriber: Subscriber) -> None:
        """Call ``subscriber`` for every notification on ``channel`` from now on (and None once listening)."""
        with self._lock:
            self._subscribers.setdefault(channel, []).append(subscriber)
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen, daemon=True, name="ledger-listen")
                self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(NOTIFY_WAIT_SECONDS + 5)
            self._thread = None

    def _tell(self, channel: str, payload: str | None) -> None:
        with self._lock:
            subscribers = list(self._subscribers.get(channel, ()))
        for subscriber in subscribers:
            try:
                subscriber(payload)
            except Exception:  # noqa: BLE001 - one subscriber's failure is not the others'
                logger.exception("a subscriber to %s failed", channel)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    listening: set[str] = set()
                    while not self._stop.is_set():
                        with self._lock:
                            channels = set(self._subscribers) - listening
                        for channel in channels:  # new subscribers, or a new connection
                            conn.execute(f'LISTEN "{channel}"')
                            listening.add(channel)
                            self._tell(channel, None)
                        for notify in conn.notifies(timeout=NOTIFY_WAIT_SECONDS, stop_after=1):
                            self._tell(notify.channel, notify.payload)
            except psycopg.Error as error:
                logger.info("notifications: %s; reconnecting", error)
                for channel in list(self._subscribers):
                    self._tell(channel, None)
                self._stop.wait(RECONNECT_SECONDS)
