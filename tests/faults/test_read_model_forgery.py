"""Read models forged with SQL: rows of the tables auditors and clients read edited, deleted or made up.

The event log is untouched, so its walk passes; ``ledger verify`` must still notice, by comparing every read model
with what the verified log makes of it: exit 1 with one ``TAMPERED: read_model_altered …`` line naming the table
and the row's position (``--json``: the same report, ``ok: false``), until ``ledger rebuild`` makes the read models
again from the log. A genuine log, parked events included, compares equal. On PostgreSQL and on SQLite; the
installed ``ledger`` executable is run as a cron job would run it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from ledger.application import ProfileLedger
from ledger.chain import event_digest, next_link
from ledger.domainmodel import CommandContext, acting_as
from ledger.settings import Database
from ledger.signing import SigningKeys
from projections.runner import ProjectionWorker
from projections.schema import hold_rebuild_lock
from tests.faults.test_poison_events import plant

LEDGER = str(Path(sys.executable).with_name("ledger"))  # the installed executable
FAR = 1000  # a fabricated row's distance past the log's end


def ledger(url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([LEDGER, "--database", url, *args], check=False, capture_output=True, text=True,
                            timeout=180, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement, as someone at a SQL prompt on the database would run it (``?`` parameters)."""
    if Database(url).is_postgres:
        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(statement.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []
    conn = sqlite3.connect(Database(url).sqlite_path)
    try:
        rows = conn.execute(statement, params).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def key(url: str, profile_id: UUID) -> Any:
    return profile_id if Database(url).is_postgres else str(profile_id)


def catch_up(url: str) -> None:
    """What a running server or ``ledger project`` does: the read models follow the log."""
    worker = ProjectionWorker(Database(url))
    try:
        worker.catch_up()
    finally:
        worker.close()


@pytest.fixture
def history(database_url: str) -> dict[str, UUID]:
    """A genuine log: two profiles, updates, an activation and a recorded execution; the read models show it."""
    app = ProfileLedger(env=Database(database_url).eventsourcing_env())
    try:
        with acting_as(CommandContext(actor="bob", reason="tuning")):
            calm = app.create_profile({"name": "calm", "steering": {1: 0.5}}).profile
            app.update_profile(calm.id, {"steering": {1: 0.75}, "layer": 3})
            bold = app.create_profile({"name": "bold", "steering": {2: 1.0}, "tags": ["mood"]}).profile
            app.update_profile(bold.id, {"description": "louder"})
            app.activate_profile(calm.id)
            app.record_execution(calm.id, seed=7)
    finally:
        app.close()
    catch_up(database_url)
    return {"calm": calm.id, "bold": bold.id}


def assert_verified(url: str) -> subprocess.CompletedProcess[str]:
    result = ledger(url, "verify")
    assert result.returncode == 0 and result.stdout.startswith("ok: "), result.stdout + result.stderr
    assert "not compared" not in result.stderr, result.stderr  # every read model was compared
    return result


def assert_read_model_altered(url: str, table: str, position: int) -> None:
    result = ledger(url, "verify")
    assert result.returncode == 1, result.stdout + result.stderr
    line, = result.stderr.splitlines()
    assert line.startswith(f"TAMPERED: read_model_altered at position {position}: {table}: "), line
    report = json.loads(ledger(url, "verify", "--json").stdout)
    assert (report["ok"], report["problem"], report["position"]) == (False, "read_model_altered", position), report
    assert report["detail"].startswith(f"{table}: "), report


def test_a_genuine_log_and_its_read_models_verify(history, database_url):
    result = assert_verified(database_url)
    assert result.stderr == "", result.stderr
    assert json.loads(ledger(database_url, "verify", "--json").stdout)["ok"] is True


def position_of(url: str, table: str, where: str, params: tuple[Any, ...] = ()) -> int:
    (position,), = sql(url, f"SELECT max(position) FROM {table} WHERE {where}", params)
    assert position is not None, (table, where)
    return int(position)


def edit_audit_actor(url: str, ids: dict[str, UUID]) -> tuple[str, int]:
    where = "event_type = 'Profile.SpecRevised'"
    position = position_of(url, "audit_events", where)
    sql(url, f"UPDATE audit_events SET actor = 'alice', reason = 'approved by CISO' WHERE {where}")
    return "audit_events", position


def delete_audit_row(url: str, ids: dict[str, UUID]) -> tuple[str, int]:
    position = position_of(url, "audit_events", "event_type = 'Profile.DetailsRevised'")
    sql(url, "DELETE FROM audit_events WHERE position = ?", (position,))
    return "audit_events", position


def insert_audit_row_past_the_end(url: str, ids: dict[str, UUID]) -> tuple[str, int]:
    """A copy of the last genuine audit row, moved past the log's end."""
    last = position_of(url, "audit_events", "1 = 1")
    columns = audit_columns(url)
    picked = ", ".join(f"position + {FAR}" if column == "position" else column for column in columns)
    sql(url, f"INSERT INTO audit_events ({', '.join(columns)}) SELECT {picked} FROM audit_events WHERE position = ?",
        (last,))
    return "audit_events", last + FAR


def audit_columns(url: str) -> list[str]:
    if Database(url).is_postgres:
        rows = sql(url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'audit_events' "
                        "AND table_schema = current_schema() ORDER BY ordinal_position")
        return [name for name, in rows]
    return [row[1] for row in sql(url, "PRAGMA table_info(audit_events)")]


def edit_profile_steering(url: str, ids: dict[str, UUID]) -> tuple[str, int]:
    position = position_of(url, "profiles", "id = ?", (key(url, ids["calm"]),))
    sql(url, "UPDATE profiles SET steering = '{\"12\": 199.0}' WHERE id = ?", (key(url, ids["calm"]),))
    return "profiles", position


def edit_profile_version(url: str, ids: dict[str, UUID]) -> tuple[str, int]:
    where = "profile_id = ? AND version = 1"
    position = position_of(url, "profile_versions", where, (key(url, ids["bold"]),))
    sql(url, f"UPDATE profile_versions SET steering = '{{\"12\": 199.0}}', actor = 'alice' WHERE {where}",
        (key(url, ids["bold"]),))
    return "profile_versions", position


FORGERIES: dict[str, Callable[[str, dict[str, UUID]], tuple[str, int]]] = {
    "audit actor and reason edited": edit_audit_actor,
    "audit row deleted": delete_audit_row,
    "audit row made up past the log's end": insert_audit_row_past_the_end,
    "profile steering edited": edit_profile_steering,
    "profile version edited": edit_profile_version,
}


@pytest.mark.parametrize("forge", list(FORGERIES.values()), ids=list(FORGERIES))
def test_a_forged_read_model_row_is_reported_until_a_rebuild(history, database_url, forge):
    assert ledger(database_url, "verify").returncode == 0
    table, position = forge(database_url, history)

    assert_read_model_altered(database_url, table, position)
    assert ledger(database_url, "projections").returncode == 0  # (positions and parked events: nothing to see)

    rebuilt = ledger(database_url, "rebuild", "--no-progress")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert_verified(database_url)


def test_a_genuine_log_with_a_parked_event_compares_equal(history, database_url):
    # 2**63 fits neither PostgreSQL's bigint nor SQLite's INTEGER: the executions read model parks it, live and
    # in the comparison's rebuild alike.
    plant(database_url, "Execution.Recorded", {"seed": 2**63})
    if not Database(database_url).is_postgres:
        link_and_sign_the_last_event(database_url)  # as PostgreSQL's trigger and plant() did there
    catch_up(database_url)
    assert ledger(database_url, "projections").returncode == 1  # parked, and said so
    walk = ledger(database_url, "verify")
    assert walk.returncode == 0 and walk.stdout.startswith("ok: "), walk.stdout + walk.stderr
    assert "not compared" not in walk.stderr
    assert ledger(database_url, "projections").returncode == 1  # the comparison left the parked events as they were


def link_and_sign_the_last_event(url: str) -> None:
    """SQLite's chain is kept by the ledger, not by a trigger: link the planted event and sign the head it leaves,
    with the service's key, so that the log walk takes it as the service's own."""
    conn = sqlite3.connect(Database(url).sqlite_path)
    try:  # its stream id spelt as the ledger spells it (plant() writes it with dashes): past the append-only trigger
        triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                                "AND tbl_name = 'stored_events'").fetchall()
        for name, _ in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("UPDATE stored_events SET originator_id = replace(originator_id, '-', '') "
                     "WHERE rowid = (SELECT max(rowid) FROM stored_events)")
        for _, statement in triggers:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()
    (position, originator_id, version, topic, state), = sql(
        url, "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events ORDER BY rowid DESC "
        "LIMIT 1")
    (previous,), = sql(url, "SELECT link FROM stored_events_chain ORDER BY notification_id DESC LIMIT 1")
    digest = event_digest(UUID(originator_id), version, topic, bytes(state))
    link = next_link(bytes(previous), position, digest)
    sql(url, "INSERT INTO stored_events_chain VALUES (?, ?, ?)", (position, digest, link))
    sql(url, "INSERT INTO stored_events_heads VALUES (?, ?)",
        (position, SigningKeys.from_env(os.environ).sign_head(position, link)))


def test_a_read_model_behind_the_log_is_compared_where_it_stands(history, database_url):
    app = ProfileLedger(env=Database(database_url).eventsourcing_env())
    try:
        app.update_profile(history["bold"], {"steering": {2: 1.5}})  # no worker runs: the read models lag behind
    finally:
        app.close()
    result = ledger(database_url, "verify")
    assert result.returncode == 0 and result.stdout.startswith("ok: ") and result.stderr == "", result.stderr
    sql(database_url, "UPDATE profiles SET steering = '{\"12\": 199.0}' WHERE id = ?",
        (key(database_url, history["calm"]),))  # before: "not compared" while behind, exit 0
    assert_read_model_altered(database_url, "profiles", position_of(
        database_url, "profiles", "id = ?", (key(database_url, history["calm"]),)))


def test_a_read_models_position_moved_to_hide_a_forged_row_or_past_the_log_is_reported(history, database_url):
    tracking = "projections_tracking" if Database(database_url).is_postgres else "tracking"
    edit_audit_actor(database_url, history)
    sql(database_url, f"UPDATE {tracking} SET notification_id = 1 WHERE application_name = 'audit'")  # "behind"
    result = ledger(database_url, "verify")  # before: "not compared", exit 0; the rows past 1 are not the log's
    assert result.returncode == 1 and "read_model_altered" in result.stderr, result.stdout + result.stderr
    assert ledger(database_url, "rebuild").returncode == 0
    sql(database_url, f"UPDATE {tracking} SET notification_id = ? WHERE application_name = 'audit'",
        (10**6,))  # past every event there is
    result = ledger(database_url, "verify")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"TAMPERED: truncated at position {10**6}: "), result.stderr  # (or the log cut)
    assert "which the read models applied (audit)" in result.stderr


def test_a_read_models_definition_row_edited_to_hide_forged_rows_fails_the_verification(history, database_url):
    assert ledger(database_url, "db", "init").returncode == 0  # as a server's start does: definitions recorded
    assert_verified(database_url)
    edit_audit_actor(database_url, history)
    sql(database_url, "UPDATE read_model_definitions SET definition = 'v0-forged' WHERE name = 'audit'")
    result = ledger(database_url, "verify")  # before: a note on stderr, "ok", exit 0: the forged actor unseen
    assert result.returncode == 1 and not result.stdout, result.stdout + result.stderr
    assert "read_model_not_compared" in result.stderr and "read model audit was not compared" in result.stderr
    report = json.loads(ledger(database_url, "verify", "--json").stdout)
    assert (report["ok"], report["problem"]) == (False, "read_model_not_compared"), report
    assert "then verify again" in result.stderr and ledger(database_url, "rebuild").returncode == 0  # as it says
    assert_verified(database_url)  # was read_model_not_compared still (after an upgrade too): nothing recorded


def test_an_auditor_with_only_the_public_key_verifies_the_log_alone(history, database_url, tmp_path):
    public = tmp_path / "ledger.pub"
    assert ledger(database_url, "public-key", "-o", str(public)).returncode == 0
    edit_audit_actor(database_url, history)
    auditor = {name: value for name, value in os.environ.items() if name != "LEDGER_SIGNING_KEY"}
    lock = None if Database(database_url).is_postgres else Path(f"{Database(database_url).sqlite_path}.rebuild-lock")
    if lock is not None:
        lock.unlink(missing_ok=True)
    result = ledger(database_url, "verify", "--public-key", str(public), env=auditor)
    assert result.returncode == 0 and result.stdout.startswith("ok: "), result.stdout + result.stderr
    note, = result.stderr.splitlines()
    assert note.startswith("note: the read models were not compared"), note
    assert lock is None or not lock.exists()  # nothing compared, nothing made beside the database: a lock neither


def test_verify_while_a_rebuild_runs_says_so(history, database_url):
    release = hold_rebuild_lock(Database(database_url))
    try:
        result = ledger(database_url, "verify")
    finally:
        release()
    assert result.returncode == 1 and "a rebuild of the read models is already running" in result.stderr, result
    assert_verified(database_url)


def test_a_read_model_table_whose_columns_were_changed_is_reported_not_taken_for_an_outage(history, database_url):
    sql(database_url, "ALTER TABLE audit_events DROP COLUMN reason")
    result = ledger(database_url, "verify")  # before: "the database cannot be reached" (75) on SQLite, 70 on PostgreSQL
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("TAMPERED: read_model_altered: audit_events: its columns are not the read "
                                    "model's (reason)"), result.stderr
    assert ledger(database_url, "rebuild").returncode == 0
    assert_verified(database_url)


def test_a_read_model_row_no_longer_of_its_type_is_named_as_damaged_not_a_crash_until_a_rebuild(history,
                                                                                                  database_url):
    calm = key(database_url, history["calm"])
    sql(database_url, "UPDATE profiles SET steering = ? WHERE id = ?", ('"not a mapping"', calm))
    (position,), = sql(database_url, "SELECT position FROM profiles WHERE id = ?", (calm,))
    listed = ledger(database_url, "list")
    assert listed.returncode == 1, listed.stdout + listed.stderr  # not 70, a fault of the ledger's own
    assert "read model cannot be read" in listed.stderr and "ledger rebuild" in listed.stderr, listed.stderr
    assert_read_model_altered(database_url, "profiles", position)
    assert ledger(database_url, "rebuild", "--no-progress").returncode == 0
    assert "calm" in ledger(database_url, "list").stdout


def test_a_read_model_row_holding_text_that_is_not_utf8_is_named_as_damaged_not_a_database_away(sqlite_url):
    app = ProfileLedger(env=Database(sqlite_url).eventsourcing_env())
    try:
        calm = app.create_profile({"name": "calm", "steering": {1: 0.5}}).profile
    finally:
        app.close()
    catch_up(sqlite_url)
    sql(sqlite_url, "UPDATE profiles SET description = CAST(X'FF61' AS TEXT) WHERE id = ?", (str(calm.id),))
    listed = ledger(sqlite_url, "list")
    assert listed.returncode == 1 and "read model cannot be read" in listed.stderr, listed.stderr  # before: 75
    assert_read_model_altered(sqlite_url, "profiles", 1)


HIDING = {  # a change by mallory dropped as it is written: from the live read model and from what verify builds
    "postgres": [
        "CREATE FUNCTION hide() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.actor = 'mallory' THEN RETURN NULL; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER hide_mallory BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION hide()",
        "CREATE FUNCTION attach_hide() RETURNS event_trigger LANGUAGE plpgsql AS $$ DECLARE r record; BEGIN"
        " FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE TABLE' LOOP"
        "  IF r.object_identity LIKE '%%audit_events%%' THEN EXECUTE format('CREATE TRIGGER hide_mallory BEFORE"
        "   INSERT ON %%s FOR EACH ROW EXECUTE FUNCTION hide()', r.object_identity); END IF; END LOOP; END $$",
        "CREATE EVENT TRIGGER attach_hide ON ddl_command_end EXECUTE FUNCTION attach_hide()",
    ],
    "sqlite": ["CREATE TRIGGER hide_mallory BEFORE INSERT ON audit_events WHEN NEW.actor = 'mallory'"
               " BEGIN SELECT RAISE(IGNORE); END"],
}


def test_a_trigger_the_ledger_did_not_make_fails_the_verification_as_no_comparison_can_prove_anything(
        history, database_url):
    postgres = Database(database_url).is_postgres
    sql(database_url, "CREATE TABLE other_app (x integer)")  # another application's table and trigger, beside:
    for statement in (["CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
                       "CREATE TRIGGER stamp BEFORE INSERT ON other_app FOR EACH ROW EXECUTE FUNCTION stamp()"]
                      if postgres else ["CREATE TRIGGER stamp AFTER INSERT ON other_app BEGIN SELECT 1; END"]):
        sql(database_url, statement)
    assert_verified(database_url)  # none of the ledger's concern
    for statement in HIDING["postgres" if postgres else "sqlite"]:
        sql(database_url, statement)
    assert ledger(database_url, "update", "calm", "--description", "x", "--actor", "mallory").returncode == 0
    catch_up(database_url)
    assert sql(database_url, "SELECT count(*) FROM audit_events WHERE actor = 'mallory'") == [(0,)]  # hidden
    result = ledger(database_url, "verify")  # before, on PostgreSQL: "ok", exit 0, the tables compared equal
    assert result.returncode == 1 and not result.stdout, result.stdout + result.stderr
    line, = result.stderr.splitlines()
    assert line.startswith("TAMPERED: read_model_not_compared") and "trigger hide_mallory on audit_events" in line
    assert ("event trigger attach_hide" in line) is postgres
    report = json.loads(ledger(database_url, "verify", "--json").stdout)
    assert (report["ok"], report["problem"]) == (False, "read_model_not_compared"), report
    sql(database_url, "DROP TRIGGER hide_mallory ON audit_events" if postgres else "DROP TRIGGER hide_mallory")
    if postgres:
        sql(database_url, "DROP EVENT TRIGGER attach_hide")
    (hidden,) = json.loads(ledger(database_url, "log", "--json", "--actor", "mallory").stdout)
    assert_read_model_altered(database_url, "audit_events", hidden["position"])  # the row it hid: now missed
    assert ledger(database_url, "rebuild").returncode == 0
    assert_verified(database_url)
