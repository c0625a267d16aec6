"""Projecting inline: the read models written in the very transaction that records the events.

A server's saves are group-committed (:mod:`ledger.group_commit`): one transaction inserts the events of many
commands under the events table's lock. The event recorder calls :class:`InlineProjection` in that transaction,
after the insert and before the commit, so the events and their rows in every read model commit together. A
command's answer then finds the read models already there (read-your-writes without waiting: the projection
lag is nil), on every server of the database, and the asynchronous worker has nothing left to do. This is
Marten's *inline* projection; the worker keeps catching up on whatever was not projected inline and runs the
rebuilds.

The read models are written inline only where that is safe, decided in the transaction, when every one of them

* has its lock free at once (a worker or a rebuild holding it is not waited for under the events table's lock),
* and has applied every event before this transaction's (its position is the log's previous event: writers
  are serialised by the table lock, so nothing before this transaction's events is still uncommitted).

Otherwise the events are left to the worker, as they are when the projection fails (a handler raising, a value a
column cannot hold): the transaction rolls back to a savepoint taken first, the events still commit, and the
worker applies them, parking what it cannot (:mod:`projections.parking`). Recording a command never fails
because of a read model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from projections.log import EventLog
from projections.parking import describe, is_transient
from projections.registry import select
from projections.store import ReadModelStore

logger = logging.getLogger(__name__)


class InlineProjection:
    """Called by the event recorder in each insert transaction (``recorder.in_transaction``).

    ``reached(position)`` is called after the commit when every read model was written inline up to
    ``position`` (a waiter in this process is answered without a query).
    """

    def __init__(
        self, store: ReadModelStore, log: EventLog, names: Iterable[str] | None = None,
        *, reached: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.projections = select(names)
        self.names = [projection.name for projection in self.projections]
        self.decode = log.decode.or_undecodable  # an event that cannot be decoded is the worker's to park
        self.events_table = log.events_table
        self.reached = reached

    def __call__(self, curs: Any, stored_events: Sequence[Any], positions: Sequence[int]) -> Callable[[], None] | None:
        """Write the events' rows when every read model is current; what to call after the commit, if anything."""
        if not positions:
            return None
        first, last = positions[0], positions[-1]
        try:
            events = [
                (position, self.decode(stored.originator_id, stored.originator_version, stored.topic, stored.state))
                for position, stored in zip(positions, stored_events)
            ]
            ops = [op for projection in self.projections for op in projection.ops_for(events)]
        except Exception as error:  # noqa: BLE001 - a handler's failure is the worker's to park
            self._left(first, last, error)
            return None
        size = sum(len(stored.state) for stored in stored_events)
        try:
            if not self.store.write_inline(curs, ops, self.names, self.events_table, positions, size):
                return None  # a read model is busy or behind: the worker applies these events with the rest
        except Exception as error:
            if is_transient(error):
                raise
            self.store.abandon_inline(curs)  # raises in turn if the savepoint was never taken: the insert fails
            self._left(first, last, error)
            return None
        reached = self.reached
        return None if reached is None else lambda: reached(last)

    @staticmethod
    def _left(first: int, last: int, error: BaseException) -> None:
        logger.warning("events at positions %d to %d were not projected inline (%s); the projection worker applies "
                       "them", first, last, describe(error))
