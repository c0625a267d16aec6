"""Rebuilding a read model in memory: the projection's own handlers, their writes folded into rows.

A rebuild does not need the database to run its statements one by one: each read model names, next to each
statement, a *fold* that does to in-memory rows what the statement does to the table (see ``FOLDS`` in the
read-model modules). :class:`MemoryBuild` feeds the whole log through the handlers and the folds; the store
loads the rows with ``COPY`` and creates the indexes afterwards. Live workers keep running the statements
(``tests/projections/test_rebuild.py`` checks the two give the same tables).

Memory stays bounded by the number of profiles, not by the length of the log: a row that no later event can
change any more (an audit row, an execution, a superseded profile version) is *sealed*: it goes to
:attr:`MemoryBuild.sealed`, which the rebuild copies to the table every few thousand rows and then empties.
What a later event still does to a sealed row is kept as a *late write* (a statement of the read model, with
its parameters), run on the table after the last copy, in log order (executions deleted with their profile,
an edit of an old version).

A read model can also name *row makers* (``ROW_MAKERS``): for one event type, a function that folds the event
straight into the build, without the handler's :class:`~projections.projection.Write` s (the audit log's
one row per event is the hot path of every rebuild).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from projections.projection import Event, ReadModelProjection, UndecodableEvent

Rows = dict[Any, dict[str, Any]]
Fold = Callable[["MemoryBuild", Mapping[str, Any]], None]


def pick(params: Mapping[str, Any], columns: Iterable[str], **fixed: Any) -> dict[str, Any]:
    """A row in ``columns`` order: each value from ``fixed`` or else from ``params``."""
    return {column: fixed[column] if column in fixed else params[column] for column in columns}


def overlay(row: dict[str, Any], params: Mapping[str, Any], columns_by_flag: Mapping[str, Iterable[str]]) -> None:
    """``CASE WHEN :set_<flag> THEN :<column> ELSE <column> END`` for each flag and its columns."""
    for flag, columns in columns_by_flag.items():
        if params[f"set_{flag}"]:
            for column in columns:
                row[column] = params[column]


class MemoryBuild:
    """The rows of one read model's tables still open to change (logical name → key → row), the sealed rows
    waiting to be copied (logical name → rows in column order), late writes, and room for a fold's indexes."""

    def __init__(self, projection: ReadModelProjection) -> None:
        self.projection = projection
        self.tables: dict[str, Rows] = {table: {} for table in projection.tables}
        self.sealed: dict[str, list[Any]] = {table: [] for table in projection.tables}
        self.late: list[tuple[str, Mapping[str, Any]]] = []
        self.extra: dict[str, Any] = {}

    @staticmethod
    def supports(projection: ReadModelProjection) -> bool:
        return set(projection.statements) <= set(projection.folds)

    def seal(self, table: str, row: dict[str, Any]) -> None:
        self.sealed[table].append(row)

    def sealed_count(self) -> int:
        return sum(len(rows) for rows in self.sealed.values())

    def take_sealed(self) -> dict[str, list[Any]]:
        """The sealed rows so far (the build forgets them)."""
        taken, self.sealed = self.sealed, {table: [] for table in self.projection.tables}
        return taken

    def apply(self, events: Iterable[tuple[int, Event]]) -> None:
        projection = self.projection
        handlers, default, folds = projection.handlers, projection.default_handler, projection.folds
        makers, default_maker = projection.row_makers, projection.default_row_maker
        for position, event in events:
            kind = type(event)
            if kind is UndecodableEvent:  # the rebuild falls back to statements, which park it
                raise event.error
            maker = makers.get(kind)
            if maker is None and default_maker is not None and kind not in handlers:
                maker = default_maker
            if maker is not None:
                maker(self, event, position)
                continue
            handler = handlers.get(kind, default)
            if handler is not None:
                for write in handler(event, position):
                    folds[write.statement](self, write.params)
