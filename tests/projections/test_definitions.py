"""Read models carry their definition: one whose recorded definition differs from the code's is rebuilt when a
process starts, instead of being left stale; so is one that lost a table or its position; an unchanged one is left
alone."""

from __future__ import annotations

import json

from ledger.application import ProfileLedger
from ledger.settings import Database
from projections.registry import select
from projections.runner import ProjectionWorker
from projections.schema import DEFINITIONS_TABLE, create_read_side, definition, init_database
from projections.store import open_store
from tests.cli.test_cli_read_side import listed, run_cli


def test_a_changed_definition_is_rebuilt_on_start_its_retired_tables_dropped_and_an_unchanged_one_left(database_url):
    database = Database(database_url)
    init_database(database)
    app = ProfileLedger(env=database.eventsourcing_env(pool_size=2))
    store = open_store(database, datastore=app.recorder.datastore)
    try:
        for name in ("calm", "bold"):
            app.create_profile({"name": name, "steering": {1: 1.0}})
        worker = ProjectionWorker(database, store=store)
        worker.catch_up()
        worker.close()
        assert create_read_side(store, database) == []  # nothing changed: nothing rebuilt
        with store.datastore.transaction(commit=True) as curs:  # as if "profiles" had been made by an older
            curs.execute(store.dialect.compile(  # definition that wrote other rows
                f"UPDATE {DEFINITIONS_TABLE} SET definition = 'v0-old' WHERE name = 'profiles'"))
            curs.execute("DELETE FROM profiles")
        with store.datastore.transaction(commit=True) as curs:  # a table the older definition had
            curs.execute("CREATE TABLE profile_graves (id TEXT PRIMARY KEY)")
    finally:
        app.close()
    assert listed(database_url) == []

    run_cli(database_url, "db", "init")  # a process starting

    assert listed(database_url) == ["bold", "calm"]
    assert _table_exists(database, "profile_graves") is False
    check = open_store(database, pool_size=1)
    try:
        with check.datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT name, definition FROM {DEFINITIONS_TABLE}")
            recorded = {row["name"]: row["definition"] for row in curs.fetchall()}
    finally:
        check.datastore.close()
    assert recorded == {projection.name: definition(projection) for projection in select()}


def test_a_read_model_that_lost_a_table_or_its_position_is_rebuilt_on_start_not_made_again_empty(database_url):
    for name in ("calm", "bold"):
        run_cli(database_url, "create", name, "-f", "1=0.5")
    run_cli(database_url, "activate", "calm")
    database = Database(database_url)
    for lost in ("profiles", "profile_usage", "the positions"):  # dropped, as an operator's mistake could
        store = open_store(database, pool_size=1)
        try:
            with store.datastore.transaction(commit=True) as curs:
                curs.execute(f"DROP TABLE {store.tracking_table if lost == 'the positions' else lost}")
        finally:
            store.datastore.close()

        run_cli(database_url, "db", "init")  # a process starting

        rows = json.loads(run_cli(database_url, "list", "--json").stdout)["profiles"]
        assert [(row["name"], row["is_active"], row["execution_count"]) for row in rows] == [
            ("bold", False, 0), ("calm", True, 0)], lost
        assert run_cli(database_url, "projections").returncode == 0  # up to date, nothing parked


def test_a_definition_names_its_version_and_changes_with_a_table():
    from dataclasses import replace

    from projections.tables import Index

    profiles = next(projection for projection in select() if projection.name == "profiles")
    assert definition(profiles).startswith(f"v{profiles.version}-")
    assert definition(replace(profiles, version=profiles.version + 1)) != definition(profiles)
    table, *others = profiles.tables
    indexed = replace(table, indexes=(*table.indexes, Index("by_created", "created_at")))
    assert definition(replace(profiles, tables=(indexed, *others))) != definition(profiles)


def _table_exists(database: Database, table: str) -> bool:
    store = open_store(database, pool_size=1)
    try:
        return not store.missing_tables([table])
    finally:
        store.datastore.close()
