"""What every read model is made of: its tables, its named statements, and one pure handler per event type.

A handler takes ``(event, position)`` and returns the :class:`Write` s the event causes; it never touches the
database. The store runs the writes of a whole batch in one transaction together with the new position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Event = Any
Handler = Callable[[Event, int], Sequence["Write"]]


class UndecodableEvent:
    """A stored event the mapper could not turn into a domain event: every read model parks it."""

    def __init__(self, originator_id: Any, topic: str, error: Exception) -> None:
        self.originator_id = originator_id
        self.topic = topic
        self.error = error


@dataclass(frozen=True)
class Write:
    """One statement (by name, see :attr:`ReadModelProjection.statements`) and its parameters."""

    statement: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class ReadModelProjection:
    """A read model: ``tables`` maps each logical table name to its DDL (table first, then its indexes).

    DDL and statements use ``{table}`` placeholders for the physical table names, so that a rebuild can
    build into fresh tables while the live ones keep answering queries.
    """

    name: str
    tables: Mapping[str, Sequence[str]]
    statements: Mapping[str, str]
    handlers: Mapping[type, Handler]
    postgres_indexes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    trigram_indexes: Mapping[str, Sequence[str]] = field(default_factory=dict)  # PG with pg_trgm only
    default_handler: Handler | None = None  # for event types without their own handler
    # For rebuilds: statement name → what it does to in-memory rows (see projections.bulk).
    folds: Mapping[str, Callable[[Any, Mapping[str, Any]], None]] = field(default_factory=dict)
    # For rebuilds: event type → a function folding the event straight into the build (bypassing handler
    # and folds), and the same for event types without their own handler.
    row_makers: Mapping[type, Callable[[Any, Event, int], None]] = field(default_factory=dict)
    default_row_maker: Callable[[Any, Event, int], None] | None = None
    # For rebuilds: statements only the rebuild runs, on rows already copied (see projections.bulk).
    late_statements: Mapping[str, str] = field(default_factory=dict)
    # Bump when a handler changes what it writes: the read model is then rebuilt on the next start (changes of
    # its tables or statements are noticed without it; see projections.schema).
    version: int = 1

    def ddl(self, table: str, *, postgres: bool, trigram: bool) -> list[str]:
        """The statements that create one table and its indexes in the given dialect."""
        statements = list(self.tables[table])
        if postgres:
            statements += self.postgres_indexes.get(table, ())
            if trigram:
                statements += self.trigram_indexes.get(table, ())
        return statements

    def writes_for(self, events: Iterable[tuple[int, Event]]) -> list[Write]:
        writes: list[Write] = []
        for position, event in events:
            if type(event) is UndecodableEvent:
                raise event.error
            handler = self.handlers.get(type(event), self.default_handler)
            if handler is not None:
                writes.extend(handler(event, position))
        return writes

    def physical_names(self, suffix: str = "") -> dict[str, str]:
        return {table: table + suffix for table in self.tables}


def event_type_name(event: Event) -> str:
    """``Profile.Created`` style: the aggregate class and the event class."""
    return type(event).__qualname__


def aggregate_type_name(event: Event) -> str:
    return type(event).__qualname__.split(".")[0]
