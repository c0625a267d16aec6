"""What every read model is made of: its tables, and one pure handler per event type.

A handler takes an event and returns the row operations it causes (:mod:`projections.ops`); it never touches
the database. Live workers run the operations of a whole batch as SQL in one transaction together with the new
position; a rebuild runs them in memory (:mod:`projections.memory`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from projections.ops import Delete, Op
from projections.tables import Table

Event = Any
Handler = Callable[[Event], Sequence[Op]]


@dataclass(frozen=True)
class UndecodableEvent:
    """A stored event the mapper could not turn into a domain event: every read model parks it."""

    originator_id: Any
    originator_version: int
    topic: str
    error: Exception


@dataclass(frozen=True)
class ReadModelProjection:
    name: str
    tables: tuple[Table, ...]
    handlers: Mapping[type, Handler]
    default_handler: Handler | None = None  # for event types without their own handler
    # Bump when a handler changes what it writes: the read model is then rebuilt on the next start (changes of
    # its tables are noticed without it; see projections.schema).
    version: int = 1

    def ops_for(self, events: Iterable[tuple[int, Event]]) -> list[tuple[int, Op]]:
        """The events' operations, each stamped with its event's position."""
        ops: list[tuple[int, Op]] = []
        handlers, default = self.handlers, self.default_handler
        for position, event in events:
            if type(event) is UndecodableEvent:
                raise event.error
            handler = handlers.get(type(event), default)
            if handler is not None:
                for op in handler(event):
                    if type(op) is not Delete:
                        op.values["position"] = position
                    ops.append((position, op))
        return ops


def event_type_name(event: Event) -> str:
    """``Profile.Created`` style: the aggregate class and the event class."""
    return type(event).__qualname__
