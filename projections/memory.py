"""Rebuilding a read model in memory: its handlers' operations run on rows held in dicts, then loaded in bulk.

A rebuild feeds the whole log through the read model's handlers (:mod:`projections.ops`) and runs their
operations on rows in memory, one dict per table (key → row); the store loads the rows in bulk into fresh
tables and creates the indexes. Live workers run the same operations as SQL (``tests/projections/
test_rebuild.py`` checks that the two give the same tables).

Memory stays bounded by the number of profiles, not by the length of the log, because rows *leave* it: an
append-only table's rows (audit, executions) go straight to the copy buffer, and so does the row a
:class:`~projections.ops.Copy` is made from (a profile's previous version). The buffer is copied to the table
every few thousand rows. An operation that needs rows which have left memory is *deferred*: it runs as SQL on
the table, per table in log order, once every row that left memory is there and before the rows still in memory
are loaded, restricted to rows whose ``position`` is below its own. It then touches exactly the rows the live
path touched:

* A row's ``position`` is the last event that wrote it. When a deferred operation at position P runs, the table
  holds the rows that left memory, as they were when they left, changed since only by the deferred operations
  before P (log order). A row that left memory after P was in memory at P, where the operation was applied:
  updated there, it carries P and is excluded; unmatched and unchanged since, it still does not match; changed
  since, it carries a later position and is excluded. Rows created after P carry later positions too.
* The rows still in memory at the end are loaded after the deferred operations, which never need them: a key
  whose operation was deferred belongs to SQL from then on (later inserts on it are deferred too, so its
  operations keep their order), and a row in memory at P was handled in memory.
* An update or deletion by key that misses memory, in a table some of whose rows left it, is deferred; so is an
  insert there that would ignore or replace an existing row, or whose key a deferred operation by other columns
  (executions deleted with their profile) may have freed. A copy whose source left memory is deferred, and so
  is every later version made from it. (A plain insert that misses memory stays there: had its key been taken,
  the live path would have refused it, and the load refuses it too. Such a row, and a copy made in memory, is
  *unchecked* until it leaves memory or is loaded, so deleting it in memory, which would skip that check, is
  undecidable.)
* Positions tell events apart, not the operations of one event: those touch distinct rows (see
  :mod:`projections.ops`).

So an edit of a version that a later version superseded, or executions deleted with their profile after some of
them were copied, reach their rows on the table. What memory cannot decide (a copy onto a key whose fate is
SQL's, a key used twice in an append-only table) raises or fails the load, and the rebuild then builds that read
model by SQL (:func:`projections.runner.rebuild`), as the live path would, parking what it cannot apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from projections.ops import Add, Copy, Delete, Greatest, Insert, Op, Update
from projections.projection import Event, ReadModelProjection


class UndecidableRowError(ValueError):
    """An operation memory cannot apply the way the live path would: the read model is built by SQL instead."""


class MemoryBuild:
    """The rows of one read model still in memory (table → key → row), the rows that left it and wait to be
    copied (table → rows), and the operations deferred to SQL (in log order)."""

    def __init__(self, projection: ReadModelProjection) -> None:
        self.projection = projection
        self.rows: dict[str, dict[Any, dict[str, Any]]] = {table.name: {} for table in projection.tables}
        self.out: dict[str, list[dict[str, Any]]] = {table.name: [] for table in projection.tables}
        self.out_count = 0
        self.left = {table.name for table in projection.tables if table.append_only}  # rows have left memory
        self.sql_keys: dict[str, set[Any]] = {table.name: set() for table in projection.tables}
        self.scattered: set[str] = set()  # tables with a deferred operation not by key
        self.unchecked: dict[str, set[Any]] = {table.name: set() for table in projection.tables}
        self.deferred: list[tuple[int, Op]] = []

    def apply(self, events: Iterable[tuple[int, Event]]) -> None:
        # Bound methods kept on the instance would make a reference cycle: the rows (millions of objects) would
        # then outlive the build until the cycle collector, which a rebuild turns off, finds them.
        run = {Insert: self._insert, Update: self._update, Delete: self._delete, Copy: self._copy}
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
        name = table.name
        if table.append_only:
            self._leave(name, op.values)
            return
        rows, key = self.rows[name], table.key_of(op.values)
        if key in rows:
            if op.on_conflict == "fail":
                raise UndecidableRowError(f"{name}: a second row with key {key!r}")
            if op.on_conflict == "replace":
                rows[key] = op.values
        elif key in self.sql_keys[name] or name in self.left and (
            op.on_conflict != "fail" or name in self.scattered
        ):
            self._defer(position, op, key)
        else:
            rows[key] = op.values
            if name in self.left:  # a row that left memory may hold the key: only the load can tell
                self.unchecked[name].add(key)

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
        name, key_of = op.table.name, op.table.key_of
        rows, unchecked = self.rows[name], self.unchecked[name]
        for row in self._targets(position, op, op.where):
            key = key_of(row)
            if key in unchecked:
                raise UndecidableRowError(f"{name}: row {key!r} is deleted before the load could check its key")
            del rows[key]

    def _copy(self, position: int, op: Copy) -> None:
        table = op.table
        name, rows, key_of = table.name, self.rows[table.name], table.key_of
        source = rows.get(key_of(op.source))
        if source is None:
            if name in self.left:
                key = key_of({**op.source, **op.values})
                self._defer(position, op, None if key in rows else key)
            return
        row = {**source, **op.values}
        key = key_of(row)
        if key in rows or key in self.sql_keys[name] or name in self.scattered:
            raise UndecidableRowError(f"{name}: a copy onto key {key!r}, which may exist")
        rows[key] = row
        self.unchecked[name].add(key)  # a row that left memory may hold the key: only the load can tell
        source_key = key_of(op.source)
        self.unchecked[name].discard(source_key)  # the copy to the table checks it now
        self._leave(name, rows.pop(source_key))  # superseded: later changes to it are rare

    # -- helpers --------------------------------------------------------------------------------------
    def _targets(self, position: int, op: Op, where: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rows in memory that ``where`` selects; the operation is deferred too when rows it may select
        have left memory."""
        name = op.table.name
        rows = self.rows[name]
        try:
            key = op.table.key_of(where)
        except KeyError:  # not by key: any row may match
            if name in self.left:
                self._defer(position, op, None)
                self.scattered.add(name)
            candidates = list(rows.values())
        else:
            row = rows.get(key)
            if row is None:
                if name in self.left:
                    self._defer(position, op, key)
                return []
            candidates = [row]
        return [row for row in candidates if all(row[column] == value for column, value in where.items())]

    def _defer(self, position: int, op: Op, key: Any) -> None:
        self.deferred.append((position, op))
        if key is not None:
            self.sql_keys[op.table.name].add(key)

    def _leave(self, table: str, row: dict[str, Any]) -> None:
        self.out[table].append(row)
        self.out_count += 1
        self.left.add(table)
