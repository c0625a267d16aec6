"""The CLI's read side: a command's writes are in the read models when it exits (any query, here or on a
server, shows them); a query only reads; ``ledger db init`` creates every table, and repeating it is harmless."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import psycopg
import pytest

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


def test_a_query_where_nothing_was_recorded_says_so_and_creates_nothing(tmp_path, postgres_url):
    import psycopg

    typo = tmp_path / "no-such-dir" / "ledgr.sqlite"
    for database_url in (f"sqlite:///{typo}", postgres_url):
        for query in (["list"], ["show", "calm"], ["verify"], ["tokens", "list"], ["projections"],
                      ["projections", "retry"], ["rebuild"]):
            result = subprocess.run([sys.executable, "-m", "ledger", "--database", database_url, *query],
                                    capture_output=True, text=True, timeout=120)
            assert result.returncode == 1, (query, result.stderr)
            assert result.stderr.startswith("error: no ledger at ") and result.stderr.count("\n") == 1
    assert not typo.parent.exists()  # no file, no directory
    empty = tmp_path / "empty.sqlite"
    empty.touch()  # a file made ahead, say: SQLite would make a database of it
    result = subprocess.run([sys.executable, "-m", "ledger", "--database", f"sqlite:///{empty}", "list"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr.startswith("error: no ledger at ")
    assert empty.stat().st_size == 0  # it wrote 4 KiB, an SQLite header in WAL mode
    with psycopg.connect(postgres_url) as conn:  # no table, no function
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace").fetchone()[0] == 0

    run_cli(postgres_url, "create", "calm")  # a command that writes makes what it needs
    assert listed(postgres_url) == ["calm"]


def test_show_and_list_give_the_pinned_active_profile_as_the_api_does_its_version_in_force(database_url):
    from tests.api.conftest import make_client

    run_cli(database_url, "create", "calm", "-f", "1=1", "--tag", "old")
    run_cli(database_url, "update", "calm", "-f", "1=9", "--tag", "new")
    run_cli(database_url, "activate", "calm", "--version", "1")
    with make_client(database_url) as api:
        by_api = api.get("/api/profiles/calm").json()
        listed_by_api = api.get("/api/profiles", params={"tag": "old"}).json()["profiles"]
    shown = json.loads(run_cli(database_url, "show", "calm", "--json").stdout)
    rows = json.loads(run_cli(database_url, "list", "--tag", "old", "--json").stdout)["profiles"]
    assert [listed_by_api[0][key] for key in ("version", "steering", "tags", "pinned", "latest_version")] == \
        [by_api[key] for key in ("version", "steering", "tags", "pinned", "latest_version")] == \
        [1, {"1": 1.0}, ["old"], True, 2]
    for document in (shown, *rows):
        assert [document[key] for key in ("version", "steering", "tags", "pinned", "latest_version")] == \
            [1, {"1": 1.0}, ["old"], True, 2]
    assert "version 1  ACTIVE (version 1 pinned, in force); latest is version 2" in run_cli(
        database_url, "show", "calm").stdout
    assert "v1  ACTIVE (version 1 pinned, in force); latest is version 2  calm  [old]" in run_cli(
        database_url, "list").stdout
    assert json.loads(run_cli(database_url, "show", "calm", "--version", "2", "--json").stdout)["version"] == 2


def test_a_read_model_table_dropped_by_hand_is_named_and_db_init_brings_it_back(database_url):
    from tests.faults.test_database_owner import Owner

    run_cli(database_url, "create", "calm", "-f", "1=1")
    Owner(database_url).run("DROP TABLE profiles", triggers=True)
    run = [sys.executable, "-m", "ledger", "--database", database_url]
    status = subprocess.run([*run, "projections"], capture_output=True, text=True, timeout=120)
    assert status.returncode == 1 and "profiles lost its table(s) profiles" in status.stdout, status.stdout
    refused = subprocess.run([*run, "list"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "the table profiles is missing" in refused.stderr, refused.stderr
    assert "ledger db init" in refused.stderr and "Traceback" not in refused.stderr
    run_cli(database_url, "db", "init")
    assert listed(database_url) == ["calm"]
    assert run_cli(database_url, "projections").returncode == 0


def test_read_models_past_the_log_s_end_are_named(sqlite_url):
    from tests.faults.test_database_owner import Owner

    run_cli(sqlite_url, "create", "calm", "-f", "1=1")
    run_cli(sqlite_url, "create", "bold", "-f", "2=1")
    owner = Owner(sqlite_url)
    for table in (owner.events, owner.chain, owner.heads):  # the owner cuts the log's tail
        column = "notification_id" if table != owner.events else "rowid"
        owner.run(f"DELETE FROM {table} WHERE {column} > 3")
    status = subprocess.run([sys.executable, "-m", "ledger", "--database", sqlite_url, "projections", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 1, status.stderr
    problems = json.loads(status.stdout)["problems"]
    assert problems and all("past the log's end" in problem for problem in problems.values()), problems
    run_cli(sqlite_url, "db", "init")  # as every server start does: rebuilt from the log as it now is
    assert run_cli(sqlite_url, "projections").returncode == 0
    run_cli(sqlite_url, "create", "after", "-f", "3=1")  # at a position the cut freed: applied, not skipped
    assert listed(sqlite_url) == ["after", "calm"]


@pytest.mark.postgres
def test_processes_initialising_a_new_database_together_announce_no_rebuild(postgres_server):
    for _ in range(8):  # a race: several tries
        url = postgres_server.create_database(f"ledger_test_together_{uuid.uuid4().hex[:8]}")
        inits = [subprocess.Popen([sys.executable, "-m", "ledger", "--database", url, "db", "init"],
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        said = [(init.wait(120), init.stderr.read()) for init in inits]
        assert all(code == 0 for code, _ in said), said
        assert not any("rebuilding" in stderr for _, stderr in said), said  # a new database lost nothing


def test_a_command_does_not_wait_for_a_writers_open_transaction_on_a_read_model_table(postgres_url):
    """Every command makes sure of the read models' tables; it made sure of their indexes too, with CREATE INDEX IF
    NOT EXISTS, which waits for the writers in the table, holds up those after them, and, for two tables in one
    transaction, deadlocked with a server's execution insert holding the other: `ledger tokens create` exited 1
    saying "the database cannot be reached (deadlock detected)" about once in thirty under load."""
    run_cli(postgres_url, "db", "init")
    with psycopg.connect(postgres_url) as writer:
        writer.execute("LOCK TABLE executions IN ROW EXCLUSIVE MODE")  # what an insert's open transaction holds
        created = subprocess.run([sys.executable, "-m", "ledger", "--database", postgres_url, "create", "calm"],
                                 capture_output=True, text=True, timeout=60)  # before: waited until the writer ended
    assert created.returncode == 0, created.stderr
    assert listed(postgres_url) == ["calm"]
