"""Creating the tables, in one place: ``ledger db init``, and what ``serve``, ``project`` and a writing CLI
command call before using the read side."""

from __future__ import annotations

from ledger.application import ProfileLedger
from ledger.settings import Database
from projections.registry import select
from projections.store import ReadModelStore, open_store


def create_read_side(store: ReadModelStore) -> None:
    """The tracking table and every read model's tables, when they do not exist yet (idempotent)."""
    store.create_table()
    store.create_read_model_tables(select())


def init_database(database: Database) -> None:
    """Every table the ledger needs: the event store's (the library creates them with the application), the
    tracking table and the read models'."""
    app = ProfileLedger(env=database.eventsourcing_env(pool_size=1))
    try:
        create_read_side(open_store(database, datastore=app.recorder.datastore))
    finally:
        app.close()
