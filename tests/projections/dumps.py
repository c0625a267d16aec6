"""Full, ordered dumps of the read-model tables, to compare two builds of them."""

from __future__ import annotations

from typing import Any

from ledger.settings import Database
from projections.store import open_store

TABLE_ORDER = {
    "profiles": "id",
    "profile_graves": "id",
    "profile_versions": "profile_id, version",
    "active_profile": "slot",
    "executions": "id",
    "audit_events": "position",
}


def dump(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    store = open_store(database, pool_size=1)
    try:
        tables = {}
        with store.datastore.transaction(commit=False) as curs:
            for table, order in TABLE_ORDER.items():
                curs.execute(f"SELECT * FROM {table} ORDER BY {order}")
                tables[table] = [tuple(dict(row).items()) for row in curs.fetchall()]
        return tables
    finally:
        store.datastore.close()
