"""How far the read models have got: waiting, bounded, until every read model has applied a log position.

A server holds a command's answer until the read models reached the command's position (read-your-writes for
every client, on every server: see the README's design section), and a query given ``min_position`` waits the
same way. Waiters do not poll the database each: one thread per process reads the read models' positions
while anyone waits: at once when a worker in another process announces a committed batch (PostgreSQL ``NOTIFY``
on :data:`CHANNEL`, :meth:`ReadSideProgress.notified`), and at the latest every ``poll_seconds`` (a lost
notification; SQLite, which has none). A worker in this process reports its position directly
(:meth:`ReadSideProgress.advanced`): no query at all.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any


logger = logging.getLogger(__name__)

CHANNEL = "ledger_read_models"
"""PostgreSQL channel a projection worker notifies after each committed batch (payload: the batch's end)."""
POLL_SECONDS = {"postgres": 0.05, "sqlite": 0.005}


def announce(store: Any, position: int) -> None:
    """Tell every process listening on :data:`CHANNEL` that the read models of ``store`` moved (PostgreSQL;
    nothing on SQLite, whose waiters poll)."""
    if store.dialect.is_postgres:
        with store.datastore.get_connection() as conn:  # autocommit: one round trip
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(position)))


class ReadSideProgress:
    """The lowest position every read model has applied, and waiting for a position (bounded)."""

    def __init__(self, positions: Callable[[], Mapping[str, int]], *, poll_seconds: float) -> None:
        self._positions = positions
        self.poll_seconds = poll_seconds
        self.reached = 0
        self.hint = threading.Event()
        """Set it to make the poller look now (a worker committed a batch; a notification arrived)."""
        self._lock = threading.Lock()
        self._waiters: list[tuple[int, int, Callable[[], None]]] = []  # (position, order, callback), a heap
        self._followers: list[Callable[[], None]] = []
        self._order = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> int:
        """Read the positions now (raises when the database cannot be reached)."""
        reached = min(self._positions().values(), default=0)
        self._settle(reached)
        return reached

    def advanced(self, position: int) -> None:
        """A projection worker in this process committed a batch: every read model it keeps (all of them) is at
        ``position`` or beyond (callable from any thread)."""
        self._settle(position)

    def notified(self, payload: str | None) -> None:
        """A worker announced a batch on :data:`CHANNEL` (payload: its position; None: something may have been
        missed): look now, unless this process knows of that position already."""
        if payload is None or not payload.isdigit() or int(payload) > self.reached:
            with self._lock:
                self._start()
            self.hint.set()

    def when_reached(self, position: int, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (from the poller's thread, or at once) once every read model applied ``position``;
        returns a function that withdraws the request."""
        if position <= self.reached:
            callback()
            return lambda: None
        entry = (position, next(self._order), callback)
        with self._lock:
            heapq.heappush(self._waiters, entry)
            self._start()
        self.hint.set()  # the poller may be in its idle wait (up to a second): it polls at its waiting pace now

        def withdraw() -> None:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                    heapq.heapify(self._waiters)

        return withdraw

    def follow(self, moved: Callable[[], None]) -> Callable[[], None]:
        """Call ``moved`` (from any thread) whenever the read models are known to have moved on (a worker of this
        process, a notification), without polling for it; returns a function that stops it."""
        with self._lock:
            self._followers.append(moved)

        def stop() -> None:
            with self._lock:
                if moved in self._followers:
                    self._followers.remove(moved)

        return stop

    def wait_for(self, position: int, timeout: float) -> bool:
        """Block until every read model applied ``position``; False after ``timeout`` seconds."""
        done = threading.Event()
        withdraw = self.when_reached(position, done.set)
        if done.wait(timeout):
            return True
        withdraw()
        return done.is_set()

    def close(self) -> None:
        self._stop.set()
        self.hint.set()
        with self._lock:  # (a poller being started under it is started once it is free)
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(2)

    # -- the poller -----------------------------------------------------------------------------------
    def _start(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._poll, daemon=True, name="read-side-progress")
            self._thread.start()

    def _poll(self) -> None:
        failures = 0
        while not self._stop.is_set():
            hinted = self.hint.wait(self.poll_seconds if self._waiters else 1.0)
            self.hint.clear()
            if self._stop.is_set() or not (hinted or self._waiters):
                continue
            try:
                self.read()
                failures = 0
            except Exception as error:  # noqa: BLE001 - the database going away: waiters time out
                failures += 1
                if failures == 1:
                    logger.info("read-side progress: %s", error)
                self._stop.wait(min(0.05 * failures, 1.0))

    def _settle(self, reached: int) -> None:
        ready: list[Callable[[], None]] = []
        with self._lock:
            if reached > self.reached:
                self.reached = reached
                ready.extend(self._followers)
            while self._waiters and self._waiters[0][0] <= self.reached:
                ready.append(heapq.heappop(self._waiters)[2])
        for callback in ready:
            try:
                callback()
            except Exception:  # noqa: BLE001 - one waiter's failure is not the others'
                logger.exception("read-side progress callback failed")
