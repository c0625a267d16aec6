"""Rebuilding a read model in memory: the projection's own handlers, their writes folded into rows.

A rebuild does not need the database to run its statements one by one: each read model names, next to each
statement, a *fold* that does to in-memory rows what the statement does to the table (see ``FOLDS`` in the
read-model modules). :class:`MemoryBuild` feeds the whole log through the handlers and the folds; the store
then loads the rows with one ``COPY`` per table and creates the indexes afterwards. Live workers keep running
the statements (``tests/projections/test_rebuild.py`` checks the two give the same tables).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from projections.projection import Event, ReadModelProjection

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
    """The rows of one read model's tables (logical name → key → row), and room for a fold's own indexes."""

    def __init__(self, projection: ReadModelProjection) -> None:
        self.projection = projection
        self.tables: dict[str, Rows] = {table: {} for table in projection.tables}
        self.extra: dict[str, Any] = {}

    @staticmethod
    def supports(projection: ReadModelProjection) -> bool:
        return set(projection.statements) <= set(projection.folds)

    def apply(self, events: Iterable[tuple[int, Event]]) -> None:
        projection = self.projection
        handlers, default, folds = projection.handlers, projection.default_handler, projection.folds
        for position, event in events:
            handler = handlers.get(type(event), default)
            if handler is not None:
                for write in handler(event, position):
                    folds[write.statement](self, write.params)
