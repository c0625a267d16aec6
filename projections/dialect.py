"""The two SQL dialects the read models are kept in, and what differs between them.

Statements are written once with ``:name`` parameters and ``{placeholders}`` for table names and the few
types that differ; :meth:`Dialect.compile` turns them into what the driver expects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec

_NAMED_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@dataclass(frozen=True)
class Dialect:
    name: str  # "postgres" or "sqlite"
    event_id: str  # the events table's column of log positions
    table_exists: str
    """A query of one parameter, a table's name: one row whose ``found`` is true when the table exists."""
    table_columns: str
    """A query of one parameter, a table's name: a row per column, its name as ``name``."""
    types: Mapping[str, str]  # what each type placeholder of a statement stands for

    @property
    def is_postgres(self) -> bool:
        return self.name == "postgres"

    def compile(self, statement: str, tables: Mapping[str, str] | None = None) -> str:
        """Fill in table names and dialect types; convert ``:name`` parameters for the driver."""
        text = statement.format(**self.types, **(tables or {}))
        if self.is_postgres:
            text = _NAMED_PARAMETER.sub(r"%(\1)s", text.replace("%", "%%"))
        return text

    def parameters(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Adapt Python values for the driver (JSON, labels, times, ids)."""
        return {key: self.adapt(value) for key, value in values.items()}

    def adapt(self, value: Any) -> Any:
        if self.is_postgres:
            if isinstance(value, dict):
                from psycopg.types.json import Json

                return Json(value, dumps=encode_json)
            return value
        if isinstance(value, (dict, list, tuple)):
            return encode_json(value).decode()
        if isinstance(value, UUID):
            return str(value)
        if isinstance(value, datetime):  # sortable text: in UTC, always with microseconds
            return value.astimezone(UTC).isoformat(timespec="microseconds")
        if isinstance(value, bool):
            return int(value)
        return value


encode_json = msgspec.json.Encoder().encode
"""A JSON column's value, in both dialects, live and in a rebuild: msgspec renders ids, times (UTC as ``Z``) and
integer keys itself."""


POSTGRES = Dialect(
    "postgres",
    event_id="notification_id",
    table_exists="SELECT to_regclass(%s) IS NOT NULL AS found",
    table_columns="SELECT attname AS name FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
                  "AND NOT attisdropped",
    types={
        "uuid": "uuid",
        "json": "json",  # kept as written: jsonb would read 1e20 back as an integer, -0.0 as 0.0
        "labels": "text[]",
        "timestamp": "timestamptz",
        "bool": "boolean",
        "bigint": "bigint",
        "float": "double precision",
        "greatest": "GREATEST",
    },
)
SQLITE = Dialect(
    "sqlite",
    event_id="rowid",
    table_exists="SELECT count(*) AS found FROM sqlite_master WHERE type = 'table' AND name = ?",
    table_columns="SELECT name FROM pragma_table_info(?)",
    types={
        "uuid": "text",
        "json": "text",
        "labels": "text",
        "timestamp": "text",
        "bool": "integer",
        "bigint": "integer",
        "float": "real",
        "greatest": "MAX",
    },
)
