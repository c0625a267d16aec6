"""Row operations: what a read model's handlers return, and their SQL.

A handler turns one event into a list of operations on its tables: :class:`Insert`, :class:`Update`,
:class:`Delete` and :class:`Copy` (a new row made of an existing one and what the event changed). That list is
the read model's only definition: live workers run it as SQL (:class:`Statements`), a rebuild runs it on rows
in memory (:mod:`projections.memory`). Each operation is stamped with its event's log position: the rows it
writes carry it in their ``position`` column.

``where`` maps columns to values (``None``: IS NULL); an update's values may be :class:`Add` (``c = c + n``)
or :class:`Greatest` (the larger of the two; NULL counts as smaller). One event's operations touch distinct rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import msgspec

from projections.dialect import Dialect
from projections.tables import Table


class Add(msgspec.Struct, gc=False):
    amount: int


class Greatest(msgspec.Struct, gc=False):
    value: Any


class Insert(msgspec.Struct, gc=False):
    """A whole row (every column but ``position``); on a key already there: fail, ignore, or replace the row."""

    table: Table
    values: dict[str, Any]
    on_conflict: Literal["fail", "ignore", "replace"] = "fail"

    def shape(self) -> tuple[Any, ...]:
        return ("insert", self.table.name, tuple(self.values), self.on_conflict)

    def sql(self, deferred: bool) -> str:
        columns = ", ".join(self.values)
        sql = f"INSERT INTO {{table}} ({columns}) VALUES ({', '.join(':' + c for c in self.values)})"
        if self.on_conflict == "ignore":
            sql += f" ON CONFLICT ({', '.join(self.table.key)}) DO NOTHING"
        elif self.on_conflict == "replace":
            changes = ", ".join(f"{c} = excluded.{c}" for c in self.values if c not in self.table.key)
            sql += f" ON CONFLICT ({', '.join(self.table.key)}) DO UPDATE SET {changes}"
        return sql

    def params(self) -> dict[str, Any]:
        return self.values


class Update(msgspec.Struct, gc=False):
    """The rows ``where`` selects get ``values`` (never their key)."""

    table: Table
    where: dict[str, Any]
    values: dict[str, Any]

    def shape(self) -> tuple[Any, ...]:
        values = tuple((column, type(value)) for column, value in self.values.items())
        return ("update", self.table.name, values, _where_shape(self.where))

    def sql(self, deferred: bool) -> str:
        changes = ", ".join(_SET.get(kind, "{c} = :{c}").format(c=c) for c, kind in self.shape()[2])
        return f"UPDATE {{table}} SET {changes} WHERE {_where(self.where, deferred)}"

    def params(self) -> dict[str, Any]:
        values = {c: v.amount if type(v) is Add else v.value if type(v) is Greatest else v
                  for c, v in self.values.items()}
        return {**values, **_where_params(self.where)}


_SET = {Add: "{c} = {c} + :{c}", Greatest: "{c} = {{greatest}}(COALESCE({c}, :{c}), :{c})"}


class Delete(msgspec.Struct, gc=False):
    table: Table
    where: dict[str, Any]

    def shape(self) -> tuple[Any, ...]:
        return ("delete", self.table.name, _where_shape(self.where))

    def sql(self, deferred: bool) -> str:
        return f"DELETE FROM {{table}} WHERE {_where(self.where, deferred)}"

    def params(self) -> dict[str, Any]:
        return _where_params(self.where)


class Copy(msgspec.Struct, gc=False):
    """A new row: the row at ``source`` (a key) with ``values`` over it (which change its key)."""

    table: Table
    source: dict[str, Any]
    values: dict[str, Any]

    def shape(self) -> tuple[Any, ...]:
        return ("copy", self.table.name, tuple(self.values), tuple(self.source))

    def sql(self, deferred: bool) -> str:
        columns = self.table.columns
        types = self.table.types  # typed: PostgreSQL would take a NULL parameter in a SELECT list for text
        picked = ", ".join(f"CAST(:{c} AS {types[c][0]})" if c in self.values else c for c in columns)
        return (f"INSERT INTO {{table}} ({', '.join(columns)}) SELECT {picked} FROM {{table}} "
                f"WHERE {_where(self.source, deferred)}")

    def params(self) -> dict[str, Any]:
        return {**self.values, **_where_params(self.source)}


Op = Insert | Update | Delete | Copy


def _where_shape(where: Mapping[str, Any]) -> tuple[tuple[str, bool], ...]:
    return tuple((column, value is None) for column, value in where.items())


def _where(where: Mapping[str, Any], deferred: bool) -> str:
    """The conditions; deferred (see :mod:`projections.memory`): only rows written before the operation."""
    terms = [f"{c} IS NULL" if value is None else f"{c} = :w_{c}" for c, value in where.items()]
    return " AND ".join([*terms, "position < :position"] if deferred else terms)


def _where_params(where: Mapping[str, Any]) -> dict[str, Any]:
    return {f"w_{column}": value for column, value in where.items() if value is not None}


class Statements:
    """Operations as SQL on one set of physical tables (``suffix``: a rebuild's), statements cached by shape.

    Each table's operations run in their order, table after table (no operation reads another table), and
    consecutive operations of one shape as one ``executemany``."""

    def __init__(self, dialect: Dialect, suffix: str = "") -> None:
        self.dialect = dialect
        self.suffix = suffix
        self._compiled: dict[tuple[Any, ...], str] = {}

    def run(self, curs: Any, execute: Callable[[Any, str, Sequence[dict[str, Any]]], None],
            ops: Iterable[tuple[int, Op]], *, deferred: bool = False) -> None:
        adapt = self.dialect.parameters
        current: str | None = None
        batch: list[dict[str, Any]] = []
        for position, op in sorted(ops, key=lambda item: item[1].table.name):
            sql = self._sql(op, deferred)
            if sql is not current and batch:
                execute(curs, current, batch)  # type: ignore[arg-type]
                batch = []
            current = sql
            params = op.params()
            params["position"] = position
            batch.append(adapt(params))
        if batch:
            execute(curs, current, batch)  # type: ignore[arg-type]

    def _sql(self, op: Op, deferred: bool) -> str:
        shape = (op.shape(), deferred)
        sql = self._compiled.get(shape)
        if sql is None:
            sql = self._compiled[shape] = self.dialect.compile(
                op.sql(deferred), {"table": op.table.name + self.suffix})
        return sql
