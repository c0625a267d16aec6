"""Group commit: concurrent saves collected into one database transaction.

On PostgreSQL every insert of events takes an EXCLUSIVE lock on the events table and sends a NOTIFY, so
one-command transactions are serialised and their throughput is capped by one commit at a time. A
:class:`GroupCommitter` lets the commands of many threads share a transaction instead:

* each caller queues its events and waits; a caller that finds no commit in progress becomes the *leader*;
* the leader takes everything queued (natural batching: whatever arrived while the previous commit was in
  flight; no fixed delay), inserts it with one call (one transaction: lock, insert, notify, commit) and hands
  each caller its own slice of the notification ids, in queue order;
* then it hands the leadership to the first caller still queued, and returns.

Every caller is answered only after its batch has committed, or with the error that stopped it:

* two queued saves of the same ``(originator_id, originator_version)`` never share a batch: the later one
  waits for the next batch, where it fails alone;
* a batch whose insert fails with an error that one save's content can cause (a conflict, the library's
  :class:`IntegrityError`; bad data) is split in halves and retried, down to the guilty caller alone, so the
  batch-mates of a conflicting command still commit (a save that must find a stream unchanged,
  ``ledger.write_path.StreamsRead``, and a batch-mate queued after it that writes the stream conflict too, and
  the split commits them one after the other);
* a connection error (the database is down, the pool is closed; the recorder has already retried once) is
  every batch-mate's error, and also that of every save queued meanwhile: they fail at once rather than each
  wait out another connection timeout, and the client retries (the API answers 503).

A batch holds at most :data:`MAX_BATCH_EVENTS` events and :data:`MAX_BATCH_BYTES` bytes of event state, and
a save whose events are larger than :data:`ledger.write_path.EVENT_BYTES_MAX` is refused before it is queued,
so every insert stays well inside the write timeouts. :meth:`GroupCommitter.pending_seconds` says how long the
oldest save still waiting has waited (``/ready`` fails when writes stop committing).

There is no thread of its own: nothing to stop, and :meth:`close` only refuses new saves.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent

from ledger.write_path import StreamsRead, check_event_sizes

MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 16 * 1024 * 1024

CONNECTION_ERRORS = (InterfaceError, OperationalError)

Insert = Callable[..., Sequence[int] | None]


@dataclass(eq=False)
class _Save:
    events: Sequence[StoredEvent]
    keys: frozenset[tuple[Any, int]]
    unchanged: StreamsRead = ()
    size: int = 0
    queued_at: float = field(default_factory=time.monotonic)
    wake: threading.Event = field(default_factory=threading.Event)
    leader: bool = False
    finished: bool = False
    positions: Sequence[int] | None = None
    error: BaseException | None = None

    def finish(self, positions: Sequence[int] | None = None, error: BaseException | None = None) -> None:
        self.positions, self.error, self.finished = positions, error, True
        self.wake.set()


class GroupCommitter:
    """Runs ``insert(events)`` for the queued saves of many threads, several saves per call.

    ``insert(events, unchanged=...)`` must insert the events in one transaction and return their notification ids
    in order (the library recorder's ``insert_events``), or raise and insert nothing.
    """

    def __init__(self, insert: Insert) -> None:
        self._insert = insert
        self._in_flight: list[_Save] = []
        self._lock = threading.Lock()
        self._queue: deque[_Save] = deque()
        self._busy = False
        self._closed = False
        self.batches = 0  # transactions committed (for tests and benchmarks)
        self.saves = 0  # saves those transactions held

    def save(self, events: Sequence[StoredEvent], unchanged: StreamsRead = ()) -> Sequence[int] | None:
        """Insert ``events`` atomically (in a transaction possibly shared with other callers'), refused if a stream
        of ``unchanged`` moved on; their ids."""
        check_event_sizes(events)
        save = _Save(events, frozenset((e.originator_id, e.originator_version) for e in events), tuple(unchanged),
                     sum(len(e.state) for e in events))
        with self._lock:
            if self._closed:
                raise InterfaceError("the event store is closed")
            self._queue.append(save)
            if not self._busy:
                self._busy = save.leader = True
        if not save.leader:
            save.wake.wait()  # answered, or made leader of the next batch
        if not save.finished:
            self._lead()
        if save.error is not None:
            raise save.error
        return save.positions

    def pending_seconds(self) -> float:
        """How long the oldest save not yet answered (queued, or in the batch being inserted) has waited; 0 when
        there is none."""
        with self._lock:
            waiting = [save.queued_at for save in (*self._in_flight, *self._queue)]
        return time.monotonic() - min(waiting) if waiting else 0.0

    def close(self) -> None:
        """Refuse new saves; those already queued are still committed (or fail with the database's error)."""
        with self._lock:
            self._closed = True

    def _lead(self) -> None:
        batch: list[_Save] = []
        unreachable: Exception | None = None
        try:
            with self._lock:
                batch = self._in_flight = self._take_batch()
            unreachable = self._commit(batch)
        finally:
            for save in batch:
                if not save.finished:  # interrupted (e.g. KeyboardInterrupt): acknowledge nothing
                    save.finish(error=InterfaceError("the save was interrupted; it may not have been recorded"))
            with self._lock:
                self._in_flight = []
                if self._queue and unreachable is not None:
                    for save in self._queue:
                        save.finish(error=unreachable)
                    self._queue.clear()
                if self._queue:
                    successor = self._queue[0]
                    successor.leader = True
                    successor.wake.set()
                else:
                    self._busy = False

    def _take_batch(self) -> list[_Save]:
        """The queued saves that can share a transaction, in queue order; the rest stay queued, in order."""
        batch: list[_Save] = []
        keys: set[tuple[Any, int]] = set()
        events = size = 0
        kept: deque[_Save] = deque()
        while self._queue:
            save = self._queue.popleft()
            full = events + len(save.events) > MAX_BATCH_EVENTS or size + save.size > MAX_BATCH_BYTES
            if batch and (full or not keys.isdisjoint(save.keys)):
                kept.append(save)
                if full:
                    break
                continue
            batch.append(save)
            keys |= save.keys
            events += len(save.events)
            size += save.size
        kept.extend(self._queue)
        self._queue = kept
        return batch

    def _commit(self, batch: list[_Save]) -> Exception | None:
        """Insert the batch, or find the guilty saves; the connection error that stopped it, if one did."""
        try:
            positions = self._insert([event for save in batch for event in save.events],
                                     unchanged=[read for save in batch for read in save.unchanged])
        except CONNECTION_ERRORS as error:
            for save in batch:
                save.finish(error=error)
            return error
        except Exception as error:
            if len(batch) == 1:
                batch[0].finish(error=error)
                return None
            middle = len(batch) // 2  # find the guilty save(s); the first half's ids precede the second's
            unreachable = self._commit(batch[:middle])
            if unreachable is None:
                return self._commit(batch[middle:])
            for save in batch[middle:]:
                save.finish(error=unreachable)
            return unreachable
        self.batches += 1
        self.saves += len(batch)
        start = 0
        for save in batch:
            end = start + len(save.events)
            save.finish(positions=None if positions is None else list(positions[start:end]))
            start = end
        return None
