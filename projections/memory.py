"""Rebuilding a read model in memory: its handlers' operations run on rows held in dicts, then COPYed.

A rebuild feeds the whole log through the read model's handlers (:mod:`projections.ops`) and runs their
operations on rows in memory, one dict per table (key → row); the store loads the rows with ``COPY`` into fresh
tables and creates the indexes afterwards. Live workers run the same operations as SQL
(``tests/projections/test_rebuild.py`` checks the two give the same tables).

Memory stays bounded by the number of profiles, not by the length of the log, because rows *leave* memory:
an append-only table's rows (audit, executions) go straight to the copy buffer, and the row a :class:`Copy` is
made from goes there too (a profile's previous version). The buffer is copied to the table every few thousand
rows. An operation that needs a row which has left memory is *deferred*: it runs as SQL on the rebuilt table
after the last copy, in log order, restricted to rows whose ``position`` is below its own (see ``_where`` in
:mod:`projections.ops`). That restriction makes it touch exactly the rows the live path touched then:

* A row's ``position`` is the last event that wrote it. At the time of a deferred operation at position P, every
  row the live path had was written before P; once the rebuild has run everything, the table also holds rows
  written after P (inserted later, or changed later in memory), and those have positions above P. Rows whose
  position is below P were not written since P, so they are what they were at P.
* A row that was in memory at P was handled there (an update stamped it with P, a deletion removed it): the
  deferred SQL leaves it alone. A row that had left memory before P can only have changed since through deferred
  operations, which run in log order: at P's turn it is as it was at P.
* A key whose operation was deferred is marked as the table's alone: every later operation on it is deferred
  too (an insert on it, a copy onto it), so the key's operations keep their order. A :class:`Copy` whose source
  has left memory therefore defers, and so does every later version made from it.
* Deletions and updates by other columns than the key (executions deleted with their profile) run on the rows
  in memory and, once rows have left memory, again as deferred SQL for those.

So an edit of a version that a later version superseded, or executions deleted with their profile after some of
them were copied, reach their rows on the table. What memory cannot decide (an insert on a key that may have
left it, a duplicate key) is deferred or raises, and a rebuild that raises falls back to building that read model
by SQL (:func:`projections.runner.rebuild`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from projections.ops import Add, Copy, Delete, Greatest, Insert, Op, Update
from projections.projection import Event, ReadModelProjection


_NOT_BY_KEY = object()


class DuplicateRowError(ValueError):
    """An insert on a key the table already holds: the live path refuses it too (and parks the event)."""


class MemoryBuild:
    """The rows of one read model still in memory (table → key → row), the rows to copy (table → rows), and the
    operations deferred to SQL (in log order)."""

    def __init__(self, projection: ReadModelProjection) -> None:
        self.projection = projection
        self.rows: dict[str, dict[Any, dict[str, Any]]] = {table.name: {} for table in projection.tables}
        self.out: dict[str, list[dict[str, Any]]] = {table.name: [] for table in projection.tables}
        self.out_count = 0
        self.left = {table.name for table in projection.tables if table.append_only}  # rows have left memory
        self.sql_keys: dict[str, set[Any]] = {table.name: set() for table in projection.tables}
        self.deferred: list[tuple[int, Op]] = []
        self._run = {Insert: self._insert, Update: self._update, Delete: self._delete, Copy: self._copy}

    def apply(self, events: Iterable[tuple[int, Event]]) -> None:
        run = self._run
        for position, op in self.projection.ops_for(events):
            run[type(op)](position, op)

    def take_out(self) -> dict[str, list[dict[str, Any]]]:
        """The rows that left memory so far (the build forgets them)."""
        taken, self.out = self.out, {name: [] for name in self.out}
        self.out_count = 0
        return taken

    # -- operations -----------------------------------------------------------------------------------
    def _insert(self, position: int, op: Insert) -> None:
        table = op.table
        if table.append_only:
            self._leave(table.name, op.values)
            return
        rows, key = self.rows[table.name], table.key_of(op.values)
        if key in self.sql_keys[table.name] or (
            key not in rows and table.name in self.left and op.on_conflict != "fail"
        ):
            self._defer(position, op, key)
        elif key not in rows or op.on_conflict == "replace":
            rows[key] = op.values
        elif op.on_conflict == "fail":
            raise DuplicateRowError(f"{table.name}: a second row with key {key!r}")

    def _update(self, position: int, op: Update) -> None:
        for row in self._targets(position, op, op.where):
            for column, value in op.values.items():
                kind = type(value)
                if kind is Add:
                    row[column] += value.amount
                elif kind is Greatest:
                    if row[column] is None or value.value > row[column]:
                        row[column] = value.value
                else:
                    row[column] = value

    def _delete(self, position: int, op: Delete) -> None:
        rows, key_of = self.rows[op.table.name], op.table.key_of
        for row in self._targets(position, op, op.where):
            del rows[key_of(row)]

    def _copy(self, position: int, op: Copy) -> None:
        table = op.table
        rows, key_of = self.rows[table.name], table.key_of
        source = rows.get(key_of(op.source))
        if source is None:
            if table.name in self.left:
                new_key = key_of({**op.source, **op.values})
                self._defer(position, op, None if new_key in rows else new_key)
            return
        row = {**source, **op.values}
        key = key_of(row)
        if key in self.sql_keys[table.name]:
            self._defer(position, op, key)
            return
        if key in rows:
            raise DuplicateRowError(f"{table.name}: a second row with key {key!r}")
        rows[key] = row
        self._leave(table.name, rows.pop(key_of(op.source)))  # superseded: later changes to it are rare

    # -- helpers --------------------------------------------------------------------------------------
    def _targets(self, position: int, op: Op, where: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rows in memory that ``where`` selects; deferred as well when rows it may select left memory."""
        table = op.table
        rows = self.rows[table.name]
        try:
            key = table.key_of(where)
        except KeyError:  # not by key
            key = _NOT_BY_KEY
        if key is not _NOT_BY_KEY:
            row = rows.get(key)
            if row is None:
                if table.name in self.left:
                    self._defer(position, op, key)
                return []
            candidates = [row]
        else:
            if table.name in self.left:
                self._defer(position, op, None)
            candidates = list(rows.values())
        return [row for row in candidates if all(row[column] == value for column, value in where.items())]

    def _defer(self, position: int, op: Op, key: Any) -> None:
        self.deferred.append((position, op))
        if key is not None:
            self.sql_keys[op.table.name].add(key)

    def _leave(self, table: str, row: dict[str, Any]) -> None:
        self.out[table].append(row)
        self.out_count += 1
        self.left.add(table)
