"""Full, ordered dumps of the read-model tables, to compare two builds of them."""

from __future__ import annotations

from typing import Any

from ledger.settings import Database
from projections.registry import select
from projections.store import open_store


def dump(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    store = open_store(database, pool_size=1)
    try:
        tables = {}
        with store.datastore.transaction(commit=False) as curs:
            for table in (table for projection in select() for table in projection.tables):
                curs.execute(f"SELECT * FROM {table.name} ORDER BY {', '.join(table.key)}")
                tables[table.name] = [tuple(dict(row).items()) for row in curs.fetchall()]
        return tables
    finally:
        store.datastore.close()
