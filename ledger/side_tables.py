"""Small tables kept beside the event log, in the application's own database (PostgreSQL or SQLite).

They hold what is not a fact of the domain: answers kept for idempotent retries, how far a one-off upgrade has
looked. Created on first use (``CREATE TABLE IF NOT EXISTS``, serialised across processes on PostgreSQL).
Statements use ``?`` placeholders, rewritten for PostgreSQL. With no datastore (the in-memory store) there is no
table: ``available`` is false and the callers keep what they need in memory.
"""

from __future__ import annotations

import threading
from typing import Any


class SideTable:
    def __init__(self, datastore: Any, name: str, columns: str) -> None:
        self.datastore, self.name, self.columns = datastore, name, columns
        module = type(datastore).__module__ if datastore is not None else ""
        self.dialect = "postgres" if "postgres" in module else "sqlite" if "sqlite" in module else None
        self._ready = False
        self._creating = threading.Lock()

    @property
    def available(self) -> bool:
        return self.dialect is not None

    @property
    def blob(self) -> str:
        return "bytea" if self.dialect == "postgres" else "BLOB"

    def _ensure(self) -> None:
        if self._ready:
            return
        with self._creating, self.datastore.transaction(commit=True) as cursor:
            if self._ready:
                return
            if self.dialect == "postgres":  # CREATE TABLE IF NOT EXISTS races with itself across sessions
                cursor.execute(f"SELECT pg_advisory_xact_lock(hashtext('{self.name}'))")
            cursor.execute(f"CREATE TABLE IF NOT EXISTS {self.name} ({self.columns.format(blob=self.blob)})")
        self._ready = True

    def _sql(self, statement: str) -> str:
        statement = statement.format(table=self.name)
        return statement.replace("?", "%s") if self.dialect == "postgres" else statement

    def one(self, statement: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        self._ensure()
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(self._sql(statement), params)
            row = cursor.fetchone()
        if row is None:
            return None
        return tuple(row.values()) if isinstance(row, dict) else tuple(row)

    def execute(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        self._ensure()
        with self.datastore.transaction(commit=True) as cursor:
            for statement, params in statements:
                cursor.execute(self._sql(statement), params)
