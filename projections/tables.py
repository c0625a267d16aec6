"""Read-model tables, each declared once: a frozen msgspec row type, its key and its indexes.

From a :class:`Table` come its DDL in both dialects, the columns of its SELECTs and the rows of its queries
(``msgspec.convert`` of what the driver returns). A column's SQL type follows the field's annotation: ``UUID``,
``str``, ``int`` (:data:`BigInt` for bigint), ``float``, ``bool``, ``datetime``, ``dict`` (JSON),
``list[str]`` or ``tuple[str, ...]`` (labels); ``X | None`` makes it nullable. Every table has a ``position`` column: the log
position of the last event that wrote the row (see :mod:`projections.ops`).
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Annotated, Any, TypeVar, Union
from uuid import UUID

import msgspec

from projections.dialect import Dialect

BIGINT = "bigint"
BigInt = Annotated[int, BIGINT]  # a bigint column
T = TypeVar("T")

_TYPES = {UUID: "{uuid}", str: "text", int: "integer", float: "{float}", bool: "{bool}", datetime: "{timestamp}",
          dict: "{json}", tuple: "{labels}", list: "{labels}"}


def sql_type(annotation: Any) -> tuple[str, bool]:
    """The column type (with dialect placeholders) of an annotation, and whether it may be NULL."""
    nullable, bigint = False, False
    while True:
        if typing.get_origin(annotation) is Annotated:
            bigint = bigint or BIGINT in annotation.__metadata__
            annotation = annotation.__origin__
        elif typing.get_origin(annotation) in (Union, types.UnionType):
            members = [member for member in typing.get_args(annotation) if member is not type(None)]
            nullable, annotation = nullable or len(members) < len(typing.get_args(annotation)), members[0]
        else:
            break
    base = typing.get_origin(annotation) or annotation
    return ("{bigint}" if bigint and base is int else _TYPES[base]), nullable


@dataclass(frozen=True)
class Index:
    """``columns`` as written in ``CREATE INDEX``; ``using`` (gin) makes it PostgreSQL's only, ``gin_trgm_ops``
    PostgreSQL's with pg_trgm only."""

    name: str
    columns: str
    unique: bool = False
    using: str | None = None

    def ddl(self, *, postgres: bool, trigram: bool) -> str | None:
        if self.using and not postgres or "gin_trgm_ops" in self.columns and not trigram:
            return None
        using = f" USING {self.using}" if self.using else ""
        unique = "UNIQUE " if self.unique else ""
        return f"CREATE {unique}INDEX IF NOT EXISTS {{table}}_{self.name} ON {{table}}{using} ({self.columns})"


@dataclass(frozen=True)
class Table:
    """A read-model table: the stored fields of ``row`` (less ``derived``, which its queries join in) and the
    ``internal`` columns no row type shows; ``append_only`` when its rows are never updated (see
    :mod:`projections.memory`)."""

    name: str
    row: type[msgspec.Struct]
    key: tuple[str, ...]
    internal: Mapping[str, Any] = field(default_factory=dict)
    derived: tuple[str, ...] = ()
    indexes: tuple[Index, ...] = ()
    checks: tuple[str, ...] = ()
    append_only: bool = False

    types: Mapping[str, tuple[str, bool]] = field(init=False)  # column → (SQL type, nullable)
    columns: tuple[str, ...] = field(init=False)
    key_of: Callable[[Mapping[str, Any]], Any] = field(init=False)  # a row's key (a tuple when it has several)
    values_of: Callable[[Mapping[str, Any]], tuple[Any, ...]] = field(init=False)  # a row in column order

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(self.row, include_extras=True)
        columns = {**{name: hint for name, hint in hints.items() if name not in self.derived}, **self.internal}
        columns.setdefault("position", BigInt)
        object.__setattr__(self, "types", {name: sql_type(hint) for name, hint in columns.items()})
        object.__setattr__(self, "columns", tuple(columns))
        object.__setattr__(self, "key_of", itemgetter(*self.key))
        object.__setattr__(self, "values_of", itemgetter(*columns))

    def ddl(self, *, postgres: bool, trigram: bool) -> list[str]:
        """The table, then its indexes; ``{table}`` stands for the physical name."""
        lines = [f"{name} {kind}{'' if nullable else ' NOT NULL'}" for name, (kind, nullable) in self.types.items()]
        lines.append(f"PRIMARY KEY ({', '.join(self.key)})")
        lines += [f"CHECK ({check})" for check in self.checks]
        body = ",\n    ".join(lines)
        indexes = [index.ddl(postgres=postgres, trigram=trigram) for index in self.indexes]
        return [f"CREATE TABLE IF NOT EXISTS {{table}} (\n    {body}\n)", *filter(None, indexes)]

    def select(self, alias: str | None = None) -> str:
        """The stored columns of the row type, for a SELECT list."""
        prefix = f"{alias}." if alias else ""
        fields = msgspec.structs.fields(self.row)
        return ", ".join(prefix + f.name for f in fields if f.name not in self.derived)


def reader(row_type: type[T], dialect: Dialect) -> Callable[[Any], T]:
    """Fetched rows (dicts on PostgreSQL, ``sqlite3.Row`` on SQLite) to ``row_type``; on SQLite, its JSON and
    label fields are decoded from their text first."""
    if dialect.is_postgres:
        return lambda row: msgspec.convert(row, row_type, strict=False)
    hints = typing.get_type_hints(row_type, include_extras=True)
    texts = [name for name, hint in hints.items() if sql_type(hint)[0] in ("{json}", "{labels}")]

    def read(row: Any) -> T:
        values = dict(row)
        for name in texts:
            if isinstance(values.get(name), str):
                values[name] = json.loads(values[name])
        return msgspec.convert(values, row_type, strict=False)

    return read
