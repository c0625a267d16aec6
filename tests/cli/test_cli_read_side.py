"""The CLI's read side: a command's writes are in the read models when it exits (any query, here or on a
server, shows them); a query only reads; ``ledger db init`` creates every table, and repeating it is harmless."""

from __future__ import annotations

import json
import subprocess
import sys

from ledger.application import ProfileLedger
from ledger.settings import Database
from projections.store import open_store


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "ledger", "--database", database_url, *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def listed(database_url: str) -> list[str]:
    return [row["name"] for row in json.loads(run_cli(database_url, "list", "--json").stdout)["profiles"]]


def read_model_positions(database_url: str) -> set[int]:
    store = open_store(Database(database_url), pool_size=1)
    try:
        return set(store.positions(["profiles", "profile_versions", "active_profile", "executions", "audit"]).values())
    finally:
        store.datastore.close()


def test_commands_show_their_writes_and_queries_never_write(database_url):
    run_cli(database_url, "db", "init")
    run_cli(database_url, "db", "init")  # again: nothing changes, nothing fails
    assert listed(database_url) == []
    run_cli(database_url, "create", "first", "-f", "1=0.5")
    assert listed(database_url) == ["first"]  # visible as soon as the command exited

    app = ProfileLedger(env=Database(database_url).eventsourcing_env(pool_size=1))  # a writer that projects nothing
    try:
        app.create_profile({"name": "unprojected", "steering": {1: 1.0}})
    finally:
        app.close()
    before = read_model_positions(database_url)
    assert listed(database_url) == ["first"]  # the query read what was there, and applied nothing
    assert read_model_positions(database_url) == before

    run_cli(database_url, "create", "second")
    assert listed(database_url) == ["first", "second", "unprojected"]  # a command applies the log up to itself
