"""The installed ``ledger`` executable, run as a cron job or a CI step would run it: names wherever an id goes,
the verbs the API has, and exit codes that mean something (``verify`` on a really tampered PostgreSQL log,
``replay`` when the output is not reproduced, every failure non-zero)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

from tests.steering.conftest import sae_dir, tiny_model_dir  # noqa: F401 - fixtures


def ledger_executable() -> str:
    found = shutil.which("ledger") or str(Path(sys.executable).with_name("ledger"))
    assert Path(found).exists(), "the ledger executable is not installed"
    return found


def run_ledger(database_url: str, cwd: Path, *args: str, code: int | None = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [ledger_executable(), "--database", database_url, *args],
        capture_output=True, text=True, cwd=cwd, timeout=300, env=os.environ.copy(),
    )
    if code is not None:
        assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def as_json(result: subprocess.CompletedProcess):
    return json.loads(result.stdout)


@pytest.fixture
def ledger(sqlite_url, tmp_path):
    return lambda *args, code=0: run_ledger(sqlite_url, tmp_path, *args, code=code)


def test_the_export_of_a_renamed_profile_active_pinned_to_an_older_version_carries_the_name_reads_show(ledger):
    ledger("create", "calm", "-f", "1=0.5")
    ledger("update", "calm", "--name", "calmer", "-f", "2=1.5")
    ledger("activate", "calmer", "--version", "1")
    exported = as_json(ledger("export", "calmer"))["profile"]
    assert (exported["name"], exported["profile_version"], exported["steering"]) == ("calmer", 1, {"1": 0.5})  # "calm"
    assert as_json(ledger("export", "calmer", "--version", "1"))["profile"]["name"] == "calm"  # a version: as it was


def test_verify_exits_1_when_a_postgres_log_was_tampered_with(postgres_url, tmp_path):
    run_ledger(postgres_url, tmp_path, "create", "calm", "-f", "1=0.5")
    run_ledger(postgres_url, tmp_path, "update", "calm", "-f", "2=1.5")
    assert run_ledger(postgres_url, tmp_path, "verify").stdout.startswith("ok:")
    events = "profileledger_events"
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # the superuser: triggers are no obstacle
        conn.execute(f"ALTER TABLE {events} DISABLE TRIGGER {events}_append_only")
        altered = conn.execute(
            f"UPDATE {events} SET state = overlay(state placing '9'::bytea from position('0.5'::bytea in state) for 1) "
            "WHERE notification_id = 1 AND position('0.5'::bytea in state) > 0"
        )
        assert altered.rowcount == 1  # the strength 0.5 now reads 9.5
        conn.execute(f"ALTER TABLE {events} ENABLE TRIGGER {events}_append_only")
    tampered = run_ledger(postgres_url, tmp_path, "verify", code=1)
    assert "TAMPERED" in tampered.stderr and "position 1" in tampered.stderr
    report = as_json(run_ledger(postgres_url, tmp_path, "verify", "--json", code=1))
    assert (report["ok"], report["problem"], report["position"]) == (False, "altered", 1)


def test_a_name_whose_record_was_altered_is_reported_as_tampered_not_as_missing(sqlite_url, tmp_path):
    run_ledger(sqlite_url, tmp_path, "create", "calm", "-f", "1=0.5")
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:  # the file's owner: triggers are no obstacle
        triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
        for name, _ in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        claimed = conn.execute("UPDATE stored_events SET state = CAST(replace(CAST(state AS TEXT), 'calm', 'palm') "
                               "AS BLOB) WHERE topic LIKE '%ProfileName.Registered'")
        assert claimed.rowcount == 1
        for _, sql in triggers:
            conn.execute(sql)
    shown = run_ledger(sqlite_url, tmp_path, "show", "calm", code=1)
    assert "changed outside the ledger" in shown.stderr and "no profile is named" not in shown.stderr


@pytest.mark.parametrize("column", ["state", "topic", "originator_id"])
def test_text_that_is_not_utf8_written_into_a_record_is_tampering_not_a_database_away(sqlite_url, tmp_path, column):
    run_ledger(sqlite_url, tmp_path, "create", "calm", "-f", "1=0.5")
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:  # the file's owner: triggers are no obstacle
        conn.execute("DROP TRIGGER stored_events_no_update")
        assert conn.execute(f"UPDATE stored_events SET {column} = CAST(X'FF' AS TEXT) || CAST({column} AS TEXT) "
                            "WHERE rowid = 1").rowcount == 1
    tampered = run_ledger(sqlite_url, tmp_path, "verify", code=1)
    assert "TAMPERED" in tampered.stderr and "position 1" in tampered.stderr, tampered.stderr
    report = as_json(run_ledger(sqlite_url, tmp_path, "verify", "--json", code=1))
    assert (report["ok"], report["position"]) == (False, 1), report
    shown = run_ledger(sqlite_url, tmp_path, "log", code=1)
    assert "changed outside the ledger" in shown.stderr and "cannot be reached" not in shown.stderr, shown.stderr


def test_every_parameter_of_a_postgres_url_is_used_sslmode_too(postgres_url, tmp_path):
    joined = "&" if "?" in postgres_url else "?"
    run_ledger(f"{postgres_url}{joined}sslmode=disable&application_name=auditor", tmp_path, "create", "calm")
    refused = run_ledger(f"{postgres_url}{joined}sslmode=require", tmp_path, "list", code=None)
    assert refused.returncode != 0 and "SSL" in refused.stderr, refused  # the test server has no TLS: never plaintext


@pytest.mark.parametrize("url", [":memory:", "sqlite:///:memory:", "   ", " ledger.sqlite",
                                 "sqlite:///x.sqlite?mode=ro"])
def test_an_sqlite_database_nothing_would_last_in_or_a_path_read_otherwise_is_refused(tmp_path, url):
    refused = run_ledger(url, tmp_path, "create", "calm", "-f", "1=0.5", code=1)
    assert refused.stderr.startswith("error: the SQLite database must be a plain file path"), refused.stderr
    assert list(tmp_path.iterdir()) == []  # no file, no key


def test_a_postgres_url_refused_for_good_stops_a_command_with_1_the_projection_worker_too(postgres_url, tmp_path):
    run_ledger(postgres_url, tmp_path, "db", "init")
    for url, args in ((postgres_url.rsplit("/", 1)[0] + "/nosuchdb", ("project",)),
                      (f"{postgres_url}?connect_timeout=abc", ("list",)),
                      (f"{postgres_url}?connect_timeout=abc", ("project",))):
        refused = run_ledger(url, tmp_path, *args, code=1)  # never a 75 to wait out, nor a worker waiting for ever
        assert refused.stderr.startswith("error: "), refused.stderr


def test_a_database_url_of_another_kind_is_refused_and_nothing_is_made(tmp_path, monkeypatch):
    for url in ("mysql://x/y", "postgresq://u@h/d", "sqlite://ledger.sqlite"):
        refused = run_ledger(url, tmp_path, "create", "z", "--actor", "a", code=1)
        assert refused.stderr.startswith("error: the database must be") and url.partition("://")[0] in refused.stderr
        monkeypatch.setenv("LEDGER_DATABASE_URL", url)  # from the environment too, for any command
        assert "error: the database must be" in subprocess.run([ledger_executable(), "list"], capture_output=True,
                                                               text=True, cwd=tmp_path).stderr
        monkeypatch.delenv("LEDGER_DATABASE_URL")
    assert list(tmp_path.iterdir()) == []


def test_replay_exits_1_when_the_output_is_not_reproduced(sqlite_url, tmp_path, tiny_model_dir, sae_dir):
    from ledger.application import ProfileLedger
    from ledger.settings import Database

    app = ProfileLedger(env=Database(sqlite_url).eventsourcing_env(pool_size=1))
    try:  # a generation whose recorded digest no model can reproduce
        recorded = app.record_execution(None, seed=3, kind="generation", details={
            "messages": [{"role": "user", "content": "hello"}],
            "sampling": {"max_tokens": 3, "temperature": 1.0, "top_p": 1.0, "stop": []},
            "method": "add", "output_sha256": "0" * 64, "fingerprint": {},
        })
    finally:
        app.close()
    run_ledger(sqlite_url, tmp_path, "rebuild")  # the read models, which the application alone does not write
    model = ["--model", str(tiny_model_dir), "--sae", str(sae_dir)]
    result = run_ledger(sqlite_url, tmp_path, "replay", str(recorded.execution_id), *model, code=1)
    assert result.stdout.startswith("NOT reproduced")
    replayed = as_json(run_ledger(sqlite_url, tmp_path, "replay", str(recorded.execution_id), "--json", *model, code=1))
    assert replayed["reproduced"] is False
    assert replayed["original_execution_id"] == str(recorded.execution_id)  # the API's fields, all of them
    assert {"position", "output", "replay_execution_id", "original_status"} <= set(replayed)
    replays = [entry["data"] for entry in as_json(run_ledger(sqlite_url, tmp_path, "log", "--json"))
               if entry["type"] == "Execution.Recorded" and entry["data"].get("replay_of")]
    assert [replay["details"]["reproduced"] for replay in replays] == [False, False]  # the log says so too


def test_every_failure_exits_non_zero_with_one_line_on_stderr(ledger, tmp_path):
    ledger("create", "calm", "-f", "1=0.5")
    (tmp_path / "latin1.json").write_bytes(b'{"name": "\xff"}')
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    huge_number = '{"k": 1' + "0" * 5000 + "}"  # more digits than Python converts: was exit 70
    (tmp_path / "huge-number.json").write_text('{"name": "n", "metadata": ' + huge_number + "}")
    failures = {
        ("import", str(tmp_path / "huge-number.json")): 1,
        ("create", "n", "--metadata", huge_number): 2,
        ("create", "n", "--steering", '{"1": ' + "9" * 310 + "}"): 1,  # too long for a float: was exit 70
        ("projections", "retry", "--position=0"): 2,  # no log position: was "no parked events", exit 0
        ("show", "nobody"): 1,
        ("restore", "calm"): 1,  # not deleted
        ("spec", "no-such-run"): 1,
        ("run", "no-such-run"): 1,
        ("diff", "calm", "--from", "1", "--to", "9"): 1,
        ("activate", "calm", "--version", "4"): 1,
        ("create", "CALM"): 1,  # the name is taken
        ("create", "loud", "-f", "1=500"): 1,  # beyond the strength bound
        ("import", str(tmp_path / "missing.json")): 1,
        ("import", str(tmp_path / "latin1.json")): 1,  # "… is not UTF-8 text"
        ("import", str(tmp_path / "deep.json")): 1,  # "… is nested too deeply …"
        ("create", "deep", "--metadata", "[" * 20_000 + "]" * 20_000): 1,
        ("create", "steered", "--steering", "[[1, 2]]"): 1,  # "--steering must be a JSON object"
        ("create", "steered", "--steering", "[]"): 1,
        ("create", "steered", "-f", "1=1", "-f", "1=2"): 1,  # "feature 1 is given twice"
        ("create", "who", "--actor", " "): 1,  # the audit trail's actor: as the API's X-Actor is checked
        ("create", "who", "--actor", "a\nb"): 1,
        ("create", "who", "--actor", "a" * 201): 1,
        ("create", "why", "--reason", "r" * 1001): 1,
        ("create", "why", "--reason", "approved\u202e by nobody"): 1,
        ("export", "calm", "-o", str(tmp_path / "no-such-dir" / "calm.json")): 1,  # "cannot write …"
        ("checkpoint", "-o", str(tmp_path / "no-such-dir" / "head.json")): 1,
        ("public-key", "-o", str(tmp_path / "latin1.json" / "key.pem")): 1,  # a file where a folder should be
        ("active",): 1,  # none is active
        ("rebuild", "bogus"): 1,  # no such read model
        ("show", "calm", "--version", "0"): 2,
        ("show", "calm", "--version", "1", "--as-of", "2030-01-01T00:00:00Z"): 2,
        ("revert", "calm"): 2,  # --version is required
        ("show",): 2,
        ("no-such-verb",): 2,
    }
    for args, code in failures.items():
        result = ledger(*args, code=None)
        assert result.returncode == code, (args, result.returncode, result.stderr)
        assert result.stderr.strip(), args
    for unknown in ("not-an-id", "00000000-0000-4000-8000-000000000000"):  # said before any model is looked for
        refused = ledger("replay", unknown, "--model", str(tmp_path / "no-model"), code=1).stderr
        assert "execution" in refused and "model" not in refused, refused


def test_the_cli_does_what_the_api_does_by_name(ledger, tmp_path):
    created = as_json(ledger("create", "Calm", "-f", "12=6", "--tag", "mood", "--product", "healthsim", "--json"))
    pid = created["profile"]["id"]
    ledger("update", "calm", "-f", "40=4", "--reason", "stronger")  # names, case-insensitively
    assert as_json(ledger("show", "CALM", "--json"))["version"] == 2
    assert [v["version"] for v in as_json(ledger("versions", "calm", "--json"))["versions"]] == [1, 2]
    diff = as_json(ledger("diff", "calm", "--from", "1", "--to", "2", "--json"))
    assert diff["steering"] == {"added": {"40": 4.0}, "removed": {"12": 6.0}, "changed": {}}
    activated = as_json(ledger("activate", "calm", "--version", "1", "--json"))
    assert (activated["version"], activated["pinned"], activated["latest_version"]) == (1, True, 2)
    assert activated["spec"]["steering"] == {"12": 6.0}
    assert (activated["profile"]["version"], activated["profile"]["steering"]) == (1, {"12": 6.0})  # was the latest
    again = ledger("activate", "calm", "--version", "1").stdout.splitlines()
    assert again[0] == "unchanged: Calm is already as requested (version 1)", again  # was "(version 2)"
    active = as_json(ledger("active", "--json"))
    assert (active["version"], active["pinned"], active["latest_version"]) == (1, True, 2)
    assert active["profile"]["steering"] == {"12": 6.0} and active["profile"]["is_active"] is True
    assert active["profile"]["pinned_version"] == 1  # as the top level says
    assert "ACTIVE" in ledger("active").stdout.splitlines()[0]
    assert "version 1  ACTIVE (version 1 pinned, in force); latest is version 2" in ledger(
        "show", "calm").stdout.splitlines()[0]  # as the API shows it: the version in force
    assert "v1  ACTIVE (version 1 pinned, in force); latest is version 2  Calm" in ledger("list").stdout
    now = datetime.now(timezone.utc).isoformat()
    then = as_json(ledger("show", "calm", "--as-of", now, "--json"))  # was version 2's, labelled as in force
    assert (then["version"], then["steering"], then["pinned"], then["latest_version"]) == (1, {"12": 6.0}, True, 2)
    assert as_json(ledger("export", "calm"))["profile"]["profile_version"] == 1  # the version in force (was 2)
    ledger("record-execution", "calm", "--run-id", "cohort-7", "--seed", "42", "--entity-count", "1000")  # in force
    spec = as_json(ledger("spec", "cohort-7", "--json"))
    assert (spec["profile_version"], spec["steering"], spec["seed"], spec["entity_count"]) == (1, {"12": 6.0}, 42, 1000)
    assert spec["products"] == ["healthsim"]
    run = as_json(ledger("run", "cohort-7", "--json"))
    assert (run["run"]["profile_id"], run["run"]["profile_version"]) == (pid, 1)
    ledger("deactivate")
    reverted = as_json(ledger("revert", "calm", "--version", "1", "--json"))
    assert (reverted["profile"]["version"], reverted["profile"]["steering"]) == (3, {"12": 6.0})
    ledger("create", "other", "-f", "1=1")
    listed = as_json(ledger("list", "--sort", "updated", "--json"))["profiles"]
    assert [p["name"] for p in listed] == ["other", "Calm"]
    ledger("export", "calm", "-o", str(tmp_path / "calm.json"))
    assert ledger("import", str(tmp_path / "calm.json"), "--rename").stdout.startswith("imported at position")
    assert "  reverted to v1\n" in ledger("versions", "calm").stdout.split("v3  ")[1]
    assert " imported from profile-ledger exported 20" in ledger("history", "Calm (imported)").stdout
    ledger("delete", "calm")
    restored = as_json(ledger("restore", "calm", "--json"))
    assert (restored["profile"]["id"], restored["profile"]["version"]) == (pid, 3)
    executions = as_json(ledger("executions", "calm", "--json"))["executions"]
    assert [e["run_id"] for e in executions] == ["cohort-7"]


def test_list_pages_with_the_cursor_it_prints_and_export_writes_stdout_for_a_dash(ledger):
    for name in ("a", "b", "c"):
        ledger("create", name, "-f", "1=1")
    first = ledger("list", "--limit", "2").stdout.splitlines()
    assert [line.split()[-3] for line in first[:2]] == ["a", "b"] and "--cursor" in first[2]
    cursor = first[2].split("--cursor ")[1].rstrip(")")
    assert [p["name"] for p in as_json(ledger("list", "--limit", "2", "--cursor", cursor, "--json"))["profiles"]] == ["c"]
    assert as_json(ledger("export", "c", "-o", "-"))["profile"]["name"] == "c"


def test_history_names_who_edited_a_version_without_a_new_one_and_what_each_changed(ledger):
    ledger("create", "h1", "-f", "1=1", "--actor", "alice")
    ledger("update", "h1", "-f", "1=2", "--actor", "carol")
    ledger("update", "h1", "--description", "edited", "--no-bump-version", "--actor", "bob", "--reason", "typo")
    first, second = as_json(ledger("history", "h1", "--json"))
    assert (second["actor"], second["state"]["description"]) == ("carol", "edited")
    assert first["changes"] is None and second["changes"]["changes"] == []  # the description is the edit's
    assert second["changes"]["steering"]["changed"] == {"1": {"before": 1.0, "after": 2.0}}
    assert [(e["actor"], e["reason"], e["changes"]) for e in second["edits"]] == [
        ("bob", "typo", [{"field": "description", "before": None, "after": "edited"}])]
    lines = ledger("history", "h1").stdout.splitlines()
    assert lines[2].startswith("v2") and "carol" in lines[2]
    assert lines[3].strip() == "1: 1.0 → 2.0"  # carol changed the steering, not the description bob edited later
    assert "bob" in lines[4] and 'description: null → "edited"  (typo)' in lines[4]


def test_history_prints_each_version_as_it_is_replayed_and_nothing_for_a_profile_that_is_not_there(ledger):
    ledger("create", "h1", "-f", "1=1")
    for strength in (2, 3):
        ledger("update", "h1", "-f", f"1={strength}")
    printed = ledger("history", "h1", "--json").stdout
    assert printed.startswith("[\n  {\n    ") and printed.endswith("\n  }\n]\n")  # the layout of every --json
    assert [record["version"] for record in json.loads(printed)] == [1, 2, 3]
    missing = ledger("history", "nothing-here", "--json", code=1)
    assert missing.stdout == "" and "no profile is named 'nothing-here'" in missing.stderr


def test_as_of_reads_a_time_as_the_api_does(ledger):
    ledger("create", "calm", "-f", "1=0.5")
    past = ledger("log", "--after", str(2**63 - 1), code=1)  # the last position there can be: this log never held it
    assert "past the log's head" in past.stderr and past.stdout == ""
    for moment in ("2999-01-01T00:00:00z", " 2999-01-01T00:00:00Z ", "2999-01-01", "2999-01-01T01:00:00+01:00"):
        assert as_json(ledger("show", "calm", "--as-of", moment, "--json"))["version"] == 1, moment



def test_show_as_of_with_a_name_shows_the_profile_that_held_the_name_then_as_the_api_does(ledger):
    first = as_json(ledger("create", "sw", "-f", "1=0.5", "--layer", "7", "--json"))["profile"]
    time.sleep(0.01)
    then = datetime.now(timezone.utc).isoformat()
    ledger("delete", "sw")
    ledger("create", "sw", "-f", "1=0.5", "--layer", "8")
    shown = as_json(ledger("show", "sw", "--as-of", then, "--json"))
    assert (shown["id"], shown["layer"]) == (first["id"], 7)  # was exit 1: the second "did not exist" then

def test_show_says_how_often_the_profile_had_run_by_the_time_it_shows_as_the_api_does(ledger):
    ledger("create", "calm", "-f", "1=0.5")
    before = datetime.now(timezone.utc)
    ledger("record-execution", "calm", "--run-id", "first")
    time.sleep(0.01)
    between = datetime.now(timezone.utc)
    ledger("record-execution", "calm", "--run-id", "second")
    then, now = (as_json(ledger("show", "calm", *when, "--json")) for when in (["--as-of", between.isoformat()], []))
    assert (then["execution_count"], now["execution_count"]) == (1, 2)  # were absent: "had it run by then?"
    last_then, last = (datetime.fromisoformat(shown["last_executed_at"]) for shown in (then, now))
    assert before < last_then < between < last
    assert as_json(ledger("show", "calm", "--as-of", before.isoformat(), "--json"))["execution_count"] == 0
    assert f"  executions: 2, the last at {last.isoformat()}" in ledger("show", "calm").stdout


def test_a_usage_error_shows_how_the_command_is_used_and_exits_2(ledger):
    for args, problem in {
        ("show",): "Missing argument 'NAME_OR_ID'",
        ("no-such-verb",): "No such command 'no-such-verb'",
        ("list", "--limit", "many"): "Invalid value for '--limit'",
        ("list", "--limit", "0"): "Invalid value for '--limit'",  # out of its range, like any bad option value
        ("executions", "--limit", "1001"): "Invalid value for '--limit'",
        ("log", "--limit", "-1"): "Invalid value for '--limit'",
        ("list", "--sort", "size"): "Invalid value for '--sort'",
        ("show", "calm", "--as-of", "yesterday"): "is not an ISO 8601 time",
        ("log", "--after", "-5"): "Invalid value for '--after'",
        ("log", "--after", str(2**64)): "Invalid value for '--after'",
        ("create", "x", "-f", "1"): "'1': expected INDEX=STRENGTH",  # an option's value as written
        ("create", "x", "-f", "1=abc"): "'1=abc': the strength must be a number",
        ("create", "x", "--metadata", "nope"): "Invalid value for '--metadata': not valid JSON",
        ("update", "x", "--steering", "{"): "Invalid value for '--steering': not valid JSON",
        ("record-execution", "x", "--metadata", "{]"): "Invalid value for '--metadata': not valid JSON",
        ("create", "x", "--steering", '{"12": 1, "12": 2}'): "the key '12' is given twice in one object (at 12)",
        ("record-execution", "x", "--metadata", '{"a": {"b": 1, "b": 2}}'): "given twice in one object (at a.b)",
        ("generate", "hi", "--temperature", "nan"): "Invalid value for '--temperature'",  # was exit 70 from torch
        ("generate", "hi", "--temperature", "inf"): "Invalid value for '--temperature'",  # was a whole run, then 1
        ("generate", "hi", "--seed", str(2**64)): "Invalid value for '--seed'",  # was "Overflow when unpacking"
        ("generate", "hi", "--top-p", "nan"): "Invalid value for '--top-p'",  # was exit 1 once the model loaded
        ("generate", "hi", "--max-tokens", "0"): "Invalid value for '--max-tokens'",
        ("generate", "hi", "--max-tokens", "4097"): "Invalid value for '--max-tokens'",  # the API's bound, as there
        ("generate", "hi", "--version", "1"): "--version needs --profile",  # was exit 1: "profile_version needs a…"
        # an option of one value given twice (the last one won, unseen: the guard became version 1)
        ("update", "x", "--expected-version", "9", "--expected-version", "1"): "'--expected-version' is given twice",
        ("revert", "x", "--version", "2", "--version", "1"): "Option '--version' is given twice: give it once",
        ("show", "x", "--as-of", "2999-01-01", "--version", "1", "--version", "1"): "'--version' is given twice",
    }.items():
        result = ledger(*args, code=2)
        assert problem in result.stderr, (args, result.stderr)
        assert f"Try 'ledger {args[0] + ' ' if args[0] != 'no-such-verb' else ''}--help' for help." in result.stderr
        assert "LEDGER_DEBUG" not in result.stderr
    empty = subprocess.run([ledger_executable(), "--database", "", "list"], capture_output=True, text=True)
    assert (empty.returncode, empty.stderr.splitlines()[-1]) == (  # was ./ledger.sqlite (or the variable's), unsaid
        2, "Error: Invalid value for '--database': must not be empty")


def test_an_sqlite_path_that_cannot_be_made_exits_1_saying_so(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    for path in (tmp_path / "a-file" / "ledger.sqlite", Path("/proc/ledger.sqlite")):
        for args in (("create", "calm", "-f", "1=0.5"), ("serve", "--no-model")):
            result = run_ledger(f"sqlite:///{path}", tmp_path, *args, code=1)  # waiting will not help: not 75, not 70
            assert result.stderr.startswith(f"error: sqlite:///{path} cannot be opened or created"), result.stderr


def test_a_read_model_named_twice_is_rebuilt_once(ledger):
    ledger("create", "calm", "-f", "1=0.5")
    assert set(as_json(ledger("rebuild", "profiles", "profiles", "--no-progress", "--json"))) == {"profiles"}
    assert [row["name"] for row in as_json(ledger("list", "--json"))["profiles"]] == ["calm"]


def test_a_process_without_the_logs_signing_key_refuses_to_write_or_rebuild_and_empties_nothing(
    ledger, sqlite_url, tmp_path, monkeypatch
):
    ledger("create", "calm", "-f", "1=0.5")
    ledger("delete", "calm")
    ledger("restore", "calm")  # the last save wrote the name's stream: a create of a new name reads no stream
    for key in ("absent", "another"):  # a copied database, a wrong LEDGER_SIGNING_KEY
        monkeypatch.setenv("LEDGER_SIGNING_KEY", str(tmp_path / f"{key}.pem"))
        if key == "another":
            from ledger.signing.keys import create_private_key

            create_private_key(tmp_path / f"{key}.pem")
        for args in (("rebuild", "--no-progress"), ("create", "bold"), ("db", "init"), ("serve", "--no-model"),
                     ("tokens", "create", "--name", "w", "--role", "admin")):  # these two wrote, signed by it
            result = ledger(*args, code=1)
            assert result.stderr.startswith("error: ") and "key" in result.stderr and len(result.stderr) < 400, args
        if key == "another":  # not a log whole but for its first record: one whose checker has the wrong key
            checked = ledger("verify", code=1).stderr
            assert "forged at position 1" in checked and "hint: " in checked and "LEDGER_SIGNING_KEY" in checked
        assert not (tmp_path / "absent.pem").exists()  # no new key made for a log signed with another
        assert [row["name"] for row in as_json(ledger("list", "--json"))["profiles"]] == ["calm"]
    monkeypatch.undo()
    assert ledger("verify").stdout.startswith("ok: ")  # nothing was written: the log is whole, and grows as before
    ledger("create", "bold", "-f", "1=0.5")


def test_a_named_signing_key_that_cannot_be_read_stops_serve_at_start_even_on_an_empty_log(ledger, tmp_path,
                                                                                           monkeypatch, sqlite_url):
    from tests.api.conftest import free_port

    monkeypatch.setenv("LEDGER_SIGNING_KEY", str(tmp_path / "mistyped.pem"))  # no write could ever commit
    for args in (("serve", "--no-model", "--port", str(free_port())), ("db", "init")):  # (serve ran on, 500 a write)
        result = ledger(*args, code=1)
        assert result.stderr == (f"error: the event-signing key {tmp_path / 'mistyped.pem'} cannot be read: [Errno 2] "
                                 f"No such file or directory: '{tmp_path / 'mistyped.pem'}'\n"), result.stderr
    from ledger.settings import Database

    assert not Path(Database(sqlite_url).sqlite_path).exists()  # nothing made: db init made the event tables first


def test_a_connection_limit_that_is_no_number_stops_serve_before_it_listens(ledger, monkeypatch):
    from tests.api.conftest import free_port

    for name, raw in (("LEDGER_MAX_HEADER_BYTES", "abc"), ("LEDGER_HEADER_TIMEOUT", "abc"),
                      ("LEDGER_HEADER_TIMEOUT", "nan"), ("LEDGER_BODY_TIMEOUT", "nan"), ("LEDGER_KEEP_ALIVE", "inf")):
        monkeypatch.setenv(name, raw)  # nan was taken: every request then hung, or was answered 400
        result = ledger("serve", "--no-model", "--port", str(free_port()), code=1)  # the operator's setting: not 70
        assert result.stderr == f"error: {name} must be a positive number (got {raw!r})\n", result.stderr
        monkeypatch.delenv(name)


def test_an_address_serve_cannot_listen_on_stops_it_at_once_in_one_line_having_made_nothing(tmp_path, tiny_model_dir):
    import socket

    from tests.api.conftest import free_port

    database = tmp_path / "new.sqlite"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port := free_port()))
        taken.listen()
        for host in ("127.0.0.1", "999.1.1.1"):  # taken; no address of this machine
            refused = run_ledger(f"sqlite:///{database}", tmp_path, "serve", "--model", str(tiny_model_dir),
                                 "--host", host, "--port", str(port), code=1)  # was 3, after loading the model
            assert refused.stderr.startswith(f"error: cannot listen on {host}:{port}: "), refused.stderr
            assert refused.stderr.count("\n") == 1 and not database.exists()  # (and after logging that it listened)
    both = run_ledger(f"sqlite:///{database}", tmp_path, "serve", "--no-model", "--model", str(tiny_model_dir), code=2)
    assert "--no-model" in both.stderr and not database.exists()  # was taken: served without the model named


def test_serve_on_an_ipv6_host_listens_there_only_as_uvicorn_did(tmp_path):
    import socket
    import urllib.request

    from tests.api.conftest import free_port
    from tests.waiting import wait_until

    port = free_port()
    server = subprocess.Popen([ledger_executable(), "--database", f"sqlite:///{tmp_path}/l.sqlite", "serve",
                               "--no-model", "--no-auth", "--host", "::", "--port", str(port)], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def health() -> int | None:
            if server.poll() is not None:
                pytest.skip(f"no IPv6 here: {server.stderr.read()}")
            try:
                return urllib.request.urlopen(f"http://[::1]:{port}/health", timeout=2).status
            except OSError:
                return None

        assert wait_until(health, 60, "the server to listen on ::") == 200
        with pytest.raises(ConnectionRefusedError):  # `::` is IPv6's every address, not IPv4's too (it took both)
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    assert f"Uvicorn running on http://[::]:{port}" in stderr, stderr  # said again (it was lost with the socket)


def test_a_device_or_dtype_torch_cannot_use_stops_serve_at_start_in_one_line(ledger, monkeypatch, tmp_path):
    from tests.api.conftest import free_port

    for name, raw, said in (("LEDGER_DTYPE", "fp32", "is none of float32, bfloat16, float16"),
                            ("LEDGER_DEVICE", "gpu", "is no device")):  # before: a traceback once it had started
        monkeypatch.setenv(name, raw)
        result = ledger("serve", "--port", str(free_port()), "--model", str(tmp_path), code=1)
        assert result.stderr.startswith(f"error: {name}={raw!r} ") and said in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1
        monkeypatch.delenv(name)


def test_a_model_or_sae_named_that_cannot_be_used_stops_serve_at_start_in_one_line(ledger, tmp_path, tiny_model_dir):
    from tests.api.conftest import free_port

    port = str(free_port())
    (tmp_path / "config-only").mkdir()
    shutil.copy(tiny_model_dir / "config.json", tmp_path / "config-only")
    (tmp_path / "empty").mkdir()
    tiny = ("--model", str(tiny_model_dir))
    cut = shutil.copytree(tiny_model_dir, tmp_path / "cut-off")
    (cut / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes()[:100])
    from steering.sae import save_sae
    from tests.steering.conftest import random_sae

    other_width = save_sae(random_sae(d_in=32), tmp_path / "other-width")
    for args, said in ((("--model", str(tmp_path / "absent")), f"error: no model at {tmp_path / 'absent'}"),
                       (("--model", str(tmp_path)), f"error: {tmp_path} holds no model that can be loaded"),
                       (("--sae", str(tmp_path / "absent")), f"error: no SAE at {tmp_path / 'absent'}"),
                       # these three were a traceback and exit 3, as the server started
                       (("--model", str(tmp_path / "config-only")), "error: "),
                       ((*tiny, "--sae", str(tmp_path / "empty")), f"error: {tmp_path / 'empty'} holds no weights"),
                       ((*tiny, "--sae", str(tiny_model_dir)), "error: SAE weights lack W_enc"),
                       # a cut-off file was exit 70; an SAE made for another model served, and every generation failed
                       (("--model", str(cut)), f"error: {cut} cannot be loaded: "),
                       ((*tiny, "--sae", str(other_width)), "error: the SAE reads vectors of 32 values")):
        result = ledger("serve", "--port", port, *args, code=1)  # before: served without it, or a traceback (3)
        assert result.stderr.startswith(said) and len(result.stderr.splitlines()) == 1, result.stderr
    refused = ledger("serve", "--port", "99999", code=2)  # before: it logged 99999 and listened on 34463
    assert "Invalid value for '--port'" in refused.stderr


@pytest.mark.parametrize("stdout", ["closed", "a full disk", "a pipe whose reader left"])
def test_a_server_whose_standard_output_cannot_be_written_serves_and_stops_cleanly(sqlite_url, tmp_path, stdout):
    import httpx

    from tests.api.conftest import free_port
    from tests.waiting import wait_until

    port = free_port()
    full = open("/dev/full", "w") if stdout == "a full disk" else None  # noqa: SIM115 - closed once passed on
    where = {"closed": {"preexec_fn": lambda: os.close(1)},  # `ledger serve >&-`: before, exit 70 at start
             "a full disk": {"stdout": full},  # before (and for a reader gone): a logging error's traceback a request
             "a pipe whose reader left": {"stdout": subprocess.PIPE}}[stdout]
    server = subprocess.Popen([ledger_executable(), "--database", sqlite_url, "serve", "--no-model", "--port",
                               str(port)], cwd=tmp_path, stderr=subprocess.PIPE, text=True, **where)
    for ours in (full, server.stdout):
        if ours is not None:
            ours.close()

    def health() -> int | None:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health").status_code
        except httpx.TransportError:
            assert server.poll() is None, server.communicate()[1]
            return None

    try:
        assert wait_until(health, 60, "the server to listen") == 200
        assert [health() for _ in range(3)] == [200] * 3  # each one a line of the request log
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    assert server.returncode in (0, -signal.SIGTERM), stderr  # uvicorn ends as the signal asks
    assert "Traceback" not in stderr and "Logging error" not in stderr and "Shutting down" in stderr, stderr


def test_ctrl_c_at_any_moment_of_a_command_ends_it_quietly_with_130(sqlite_url, tmp_path):
    """While its modules load, while its commands are built, while it runs, while it closes (the last two windows
    printed a traceback and died of the signal, sometimes after the change was made)."""
    for tenths in range(1, 12):
        started = subprocess.Popen([ledger_executable(), "--database", sqlite_url, "create", f"c{tenths}", "-f", "1=1"],
                                   cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(tenths / 10)
        started.send_signal(signal.SIGINT)
        _, stderr = started.communicate(timeout=60)
        assert "Traceback" not in stderr and started.returncode in (130, 1, 0), (tenths, started.returncode, stderr)


def test_what_the_cli_shows_of_a_profile_imports_and_closed_or_full_standard_streams_are_refusals(ledger, tmp_path):
    ledger("create", "f", "-f", "1=1", "--tag", "t")
    (tmp_path / "f.json").write_text(ledger("show", "f", "--json").stdout)
    copied = as_json(ledger("import", str(tmp_path / "f.json"), "--rename", "--json"))["profile"]
    assert (copied["name"], copied["steering"], copied["tags"]) == ("f (imported)", {"1": 1.0}, ["t"])
    closed = subprocess.run([ledger_executable(), "--database", f"sqlite:///{tmp_path}/ledger.sqlite", "import", "-"],
                            capture_output=True, text=True, cwd=tmp_path, stdin=subprocess.DEVNULL, close_fds=True,
                            preexec_fn=lambda: os.close(0))
    assert (closed.returncode, closed.stderr) == (1, "error: cannot read -: standard input is closed\n")
    database = [ledger_executable(), "--database", f"sqlite:///{tmp_path}/ledger.sqlite"]
    for command in (["export", "f"], ["list"], ["show", "f", "--json"], ["log"], ["create", "g"], ["--help"],
                    ["list", "--help"]):  # (the help's were 70 and 0, the help lost)
        with open("/dev/full", "w") as full:  # was 70, an internal fault (list, show, log, create: export's was fixed)
            refused = subprocess.run(database + command, stdout=full, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        assert (refused.returncode, refused.stderr) == (
            1, "error: cannot write standard output: No space left on device\n"), command
        if command[0] == "create":  # the change was made all the same: the README says so
            ledger("delete", "g")
        nowhere = subprocess.run(database + command, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                 preexec_fn=lambda: os.close(1))
        assert (nowhere.returncode, nowhere.stderr) == (
            1, "error: cannot write standard output: standard output is closed\n"), command  # was 0, the answer lost
    for _ in range(3):
        ledger("create", f"more {_}")
    for command in (["list"], ["--help"]):
        piped = subprocess.Popen(database + command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        piped.stdout.close()  # `ledger list | head -0`: the reader is gone before the first line
        assert (piped.wait(60), piped.stderr.read()) == (141, b""), command  # as shell tools end (was 1)


def test_an_import_document_giving_a_key_twice_is_refused_as_the_api_refuses_it_and_nothing_is_imported(
    ledger, tmp_path
):
    for document, where in (('{"format": "millm_profile", "profile": {"name": "q", "name": "r"}}', "profile.name"),
                            ('{"format": "millm_profile", "profile": {"name": "q", "steering": {"1": 1, "1": 150}}}',
                             "profile.steering.1")):  # (was imported: as r, at strength 150, the values unseen)
        (tmp_path / "twice.json").write_text(document)
        refused = ledger("import", str(tmp_path / "twice.json"), code=1)
        assert refused.stderr.startswith(f"error: {tmp_path / 'twice.json'}: the key "), refused.stderr
        assert f"given twice in one object (at {where}): give it once" in refused.stderr
    assert "nothing was recorded there" in ledger("list", code=1).stderr


def test_an_unreachable_database_exits_75_with_one_line_saying_so(tmp_path):
    from tests.api.conftest import free_port

    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/ledger"
    for args in (("list",), ("verify",), ("create", "calm", "-f", "1=0.5"), ("serve", "--no-model")):
        result = run_ledger(nowhere, tmp_path, *args, code=75)  # sysexits' EX_TEMPFAIL: try again (`project` waits)
        assert result.stderr.startswith("error: the database cannot be reached"), (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "LEDGER_DEBUG" not in result.stderr


@pytest.mark.postgres
def test_a_database_or_role_the_server_does_not_know_exits_1_saying_so(tmp_path, postgres_url):
    server, _, _ = postgres_url.rpartition("/")
    for url, reason in ((f"{server}/no_such_ledger", 'database "no_such_ledger" does not exist'),
                        (server.replace("postgres@", "nobody@") + "/ledger", 'role "nobody" does not exist')):
        for args in (("list",), ("create", "calm"), ("serve", "--no-model")):
            result = run_ledger(url, tmp_path, *args, code=1)  # retrying will not help: not 75
            assert result.stderr == f"error: no ledger at {url}: {reason}\n", (args, result.stderr)


@pytest.mark.postgres
def test_a_role_whose_password_is_missing_or_wrong_exits_1_saying_so(tmp_path, postgres_server, postgres_url):
    if postgres_server.data_dir is None:
        pytest.skip("the server's pg_hba.conf is not these tests' to change")
    role = f"needs_password_{os.getpid()}"
    hba = postgres_server.data_dir / "pg_hba.conf"
    allowed = hba.read_text()
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n{allowed}")
    with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'right'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        shown = postgres_url.replace("postgres@", f"{role}@")
        for url, reason in ((shown, "fe_sendauth: no password supplied"),  # (was 75: try again, forever)
                            (postgres_url.replace("postgres@", f"{role}:wrong@"), "password authentication failed")):
            for args in (("list",), ("create", "calm")):
                result = run_ledger(url, tmp_path, *args, code=1)
                assert result.stderr.startswith(f"error: cannot use {shown}: "), (args, result.stderr)
                assert reason in result.stderr and "wrong" not in result.stderr
    finally:
        hba.write_text(allowed)
        with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(f"DROP ROLE {role}")


@pytest.mark.postgres
def test_a_database_that_takes_no_writes_answers_queries_refuses_commands_with_exit_1_and_verify_says_what_it_skipped(
    tmp_path, postgres_url
):
    run_ledger(postgres_url, tmp_path, "create", "calm", "-f", "1=0.5")
    read_only = postgres_url + "?options=-c%20default_transaction_read_only%3Don"  # as a hot standby answers
    assert "calm" in run_ledger(read_only, tmp_path, "list").stdout
    for args in (("create", "other"), ("update", "calm", "-f", "1=0.7"), ("serve", "--no-model")):
        result = run_ledger(read_only, tmp_path, *args, code=1)  # (were 70: "a fault of the ledger's own")
        assert result.stderr.startswith(f"error: {postgres_url} takes no writes (cannot execute "), result.stderr
        assert result.stderr.endswith("this command writes; run it against a database that takes them\n")
    verified = run_ledger(read_only, tmp_path, "verify")  # the log is verified; the read models cannot be built
    assert verified.stdout.startswith("ok: 3 events verified"), verified.stdout  # (was 70, nothing verified)
    assert "note: the read models were not compared with the log" in verified.stderr
    assert [line.split()[2] for line in run_ledger(postgres_url, tmp_path, "list").stdout.splitlines()] == ["calm"]


def test_an_sqlite_file_that_cannot_be_written_answers_queries_and_refuses_commands_with_exit_1(tmp_path):
    database = tmp_path / "ledger.sqlite"
    run_ledger(str(database), tmp_path, "create", "calm", "-f", "1=0.5")
    if os.geteuid() == 0:  # (root writes whatever the mode says)
        subprocess.run(["chattr", "+i", str(database)], check=True)
    else:
        database.chmod(0o444)
    try:
        assert "calm" in run_ledger(str(database), tmp_path, "list").stdout
        result = run_ledger(str(database), tmp_path, "create", "other", code=1)  # (was 75: try again, forever)
        assert result.stderr == (f"error: sqlite:///{database} takes no writes (attempt to write a readonly database): "
                                 "this command writes; run it against a database that takes them\n")
        assert "note: the read models were not compared" in run_ledger(str(database), tmp_path, "verify").stderr
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(database)], check=True)


def test_a_file_that_is_not_a_database_is_refused_in_one_line(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    for args in (("list",), ("create", "calm"), ("serve", "--no-model")):
        result = run_ledger(str(notes), tmp_path, *args, code=1)
        assert result.stderr == f"error: sqlite:///{notes} cannot be used: file is not a database\n", args
    assert notes.read_text() == "not a database\n"


def test_a_setting_that_is_not_a_number_in_its_range_is_reported_and_its_default_kept(ledger, monkeypatch):
    for raw in ("nan", "inf", "-1", "abc"):  # nan compared false with every strength: it was no bound at all
        monkeypatch.setenv("LEDGER_STEERING_MAX_STRENGTH", raw)
        refused = ledger("create", "loud", "-f", "1=1e300", code=1)
        assert "between -200 and 200" in refused.stderr and f"LEDGER_STEERING_MAX_STRENGTH={raw!r}" in refused.stderr
    monkeypatch.delenv("LEDGER_STEERING_MAX_STRENGTH")
    for raw in ("abc", "-1"):  # "abc" was a fault (exit 70); -1 was taken
        monkeypatch.setenv("LEDGER_SNAPSHOT_INTERVAL", raw)
        made = ledger("create", f"snap {raw}", "-f", "1=1")
        assert f"LEDGER_SNAPSHOT_INTERVAL={raw!r} is not an integer >= 0; using 100" in made.stderr


def test_free_text_cannot_draw_lines_of_its_own_in_the_text_output(ledger):
    forged = "oops)\nv2  2026-12-04T22:00:00+00:00  alice  Profile.SpecRevised  (approved\x1b[32m\x07"
    for label in ("--tag", "--product", "--model-id", "--sae-id"):  # these refuse them outright, as names do
        refused = ledger("create", "h", "-f", "1=1", label, "x\n  steering (0 features): -", code=1)
        assert "must not contain control or invisible characters" in refused.stderr
    ledger("create", "h", "-f", "1=1", "--metadata", '{"note\u202e": "ok\\u001b[32m\\u202e"}')
    ledger("update", "h", "-f", "1=5", "--actor", "mallory", "--reason", forged)
    refused = ledger("record-execution", "h", "--run-id", "r\nforged", "--seed", "1", code=1)  # refused too
    assert "must not contain control or invisible characters" in refused.stderr
    ledger("update", "h", "--description", "x\u202e")
    for command in (("history", "h"), ("versions", "h"), ("list",), ("show", "h"), ("executions", "h"),
                    ("diff", "h", "--from", "1")):
        text = ledger(*command).stdout
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text, command
        assert not any(line.startswith(("v2  2026-12-04T22:00", "0000-fake", "forged")) for line in text.splitlines())
    assert "\\x0av2  2026-12-04T22:00" in ledger("history", "h").stdout  # shown, escaped, on its own line
    assert as_json(ledger("history", "h", "--json"))[1]["reason"] == forged  # --json keeps it exact


def test_an_update_based_on_a_revision_that_an_edit_moved_past_is_refused(ledger):
    read = as_json(ledger("create", "kept", "-f", "1=1", "--json"))["profile"]
    ledger("update", "kept", "--description", "edited in place", "--no-bump-version")  # the version stays
    expected = ("--expected-version", str(read["version"]), "--expected-revision", str(read["revision"]))
    stale = ledger("update", "kept", "--description", "mine", *expected, code=1)
    assert "has changed since" in stale.stderr
    assert as_json(ledger("show", "kept", "--json"))["description"] == "edited in place"  # not lost
    current = as_json(ledger("show", "kept", "--json"))
    ledger("update", "kept", "--description", "mine", "--expected-revision", str(current["revision"]))
    assert ledger("update", "kept", "--expected-version", "0", code=2).stderr  # a version is 1 or more


def test_expected_revision_alone_refuses_update_revert_and_delete_of_a_profile_changed_since(ledger):
    read = as_json(ledger("create", "watched", "-f", "1=1", "--json"))["profile"]
    ledger("update", "watched", "--tag", "theirs")  # another writer, after the read
    stale = ("--expected-revision", str(read["revision"]))
    for command in (("update", "watched", "--tag", "mine", *stale), ("revert", "watched", "--version", "1", *stale),
                    ("delete", "watched", *stale)):
        refused = ledger(*command, code=1)
        assert f"since revision {read['revision']}" in refused.stderr, command
    shown = as_json(ledger("show", "watched", "--json"))
    assert shown["tags"] == ["theirs"] and shown["version"] == 2  # nothing lost, nothing deleted
    ledger("update", "watched", "--tag", "mine", "--expected-revision", str(shown["revision"]))


def test_history_says_what_each_version_changed(ledger):
    ledger("create", "h", "-f", "1=1", "--layer", "3")
    ledger("update", "h", "--layer", "7")
    ledger("update", "h", "--description", "calmer", "-f", "1=1", "-f", "9=2")
    lines = ledger("history", "h").stdout.splitlines()
    assert lines[1].strip() == 'steering={"1": 1.0} name="h"'  # values as JSON, as the other lines show them
    assert lines[3].strip() == "layer: 3 → 7"
    assert lines[5].strip() == 'description: null → "calmer"; +9=2.0'


def test_executions_are_listed_a_page_at_a_time_as_profiles_are(ledger):
    ledger("create", "ran", "-f", "1=1")
    for seed in range(5):
        ledger("record-execution", "ran", "--run-id", f"run-{seed}", "--seed", str(seed))
    seen, cursor = [], None
    while True:
        page = as_json(ledger("executions", "ran", "--limit", "2", "--json", *(["--cursor", cursor] if cursor else [])))
        seen += [execution["run_id"] for execution in page["executions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"run-{seed}" for seed in reversed(range(5))]  # newest first, each once
    assert "(more: the same command with --cursor " in ledger("executions", "--limit", "2").stdout


@pytest.mark.postgres
def test_a_role_the_database_refuses_exits_1_saying_so_and_ledger_debug_keeps_the_status(tmp_path, postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS powerless")
        admin.execute("CREATE ROLE powerless LOGIN")  # may connect, may not create tables in public
    url = postgres_url.replace("postgres@", "powerless@")
    for args in (("create", "calm", "-f", "1=1"), ("db", "init")):
        result = run_ledger(url, tmp_path, *args, code=1)  # retrying will not help: not 75, and no fault: not 70
        assert "refuses this role" in result.stderr and "permission denied" in result.stderr, result.stderr
    debugged = subprocess.run([ledger_executable(), "--database", url, "create", "calm", "-f", "1=1"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, env={**os.environ, "LEDGER_DEBUG": "1"})
    assert debugged.returncode == 1 and "Traceback" in debugged.stderr  # the traceback, the same exit status


def test_a_database_url_that_cannot_work_is_refused_before_anything_is_tried(tmp_path):
    for url, said in (("postgresql://x@[::1/db", "cannot be read"), ("postgresql://x@127.0.0.1:abc/l", "port"),
                      ("postgresql://x@127.0.0.1:99999/l", "port"), ("host=127.0.0.1 password=S3cret", "libpq")):
        result = run_ledger(url, tmp_path, "create", "calm", "-f", "1=1", code=1)  # not 70, not 75 (try again)
        assert said in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []  # no file named after a keyword string, password and all


def test_text_that_is_no_unicode_is_refused_naming_its_field_not_an_internal_fault(ledger, tmp_path):
    document = tmp_path / "surrogate.json"
    document.write_text('{"type": "millm_profile", "profile": {"name": "s", "metadata": {"k": "\\ud800"}}}')
    for command, field in ((("import", str(document)), "metadata.k"),
                           (("create", "a", "--metadata", '{"k": "\\ud800"}'), "metadata.k"),
                           (("create", "b", "--description", "a\udcffb"), "description")):  # a byte argv cannot decode
        refused = ledger(*command, code=1)
        assert f"{field} must not contain a lone surrogate" in refused.stderr, refused.stderr
    assert "no profiles" in ledger("list").stdout
    for command, option in ((("list", "--search", "x\udcff"), "--search"), (("list", "--tag", "x\udcff"), "--tag"),
                            (("list", "--product", "x\udcff"), "--product"), (("run", "q\udcff"), "run_id"),
                            (("spec", "q\udcff"), "run_id"), (("executions", "--run-id", "q\udcff"), "--run-id")):
        refused = ledger(*command, code=1)  # filters too: they were an internal fault (exit 70)
        assert f"{option} must not contain a lone surrogate" in refused.stderr, (command, refused.stderr)


def test_the_active_profile_pinned_to_an_earlier_version_reads_in_the_cli_as_in_the_api(ledger, tmp_path):
    ledger("create", "Été fort", "-f", "3=1")
    ledger("update", "été fort", "--name", "renamed-été")
    ledger("update", "renamed-été", "-f", "3=2")
    ledger("activate", "renamed-été", "--version", "1")
    active = as_json(ledger("active", "--json"))
    assert (active["profile"]["name"], active["profile"]["steering"]) == ("renamed-été", {"3": 1.0})  # its name now
    assert active["profile"]["revision"] == 4 and active["profile"]["updated_at"] > active["profile"]["created_at"]
    shown_active = ledger("active").stdout
    assert shown_active.startswith("renamed-été  ")  # was "Été fort", the name version 1 had
    assert "; latest is version 3" in shown_active.splitlines()[0]  # as show and list say it
    for command in (("update", "renamed-été", "--description", "calmer"), ("revert", "renamed-été", "--version", "1")):
        answer = as_json(ledger(*command, "--json"))["profile"]  # was the latest version, unmarked
        assert (answer["version"], answer["pinned"], answer["steering"]) == (1, True, {"3": 1.0}), command
        assert answer["latest_version"] > 2
    text = ledger("update", "renamed-été", "--description", "calmest").stdout
    assert "version 1  ACTIVE (version 1 pinned, in force); latest is version" in text, text


def test_an_auditor_without_a_model_learns_why_a_run_cannot_be_replayed_and_whose_run_it_was(ledger, tmp_path):
    ledger("create", "runner", "-f", "1=1")
    recorded = as_json(ledger("record-execution", "runner", "--run-id", "cohort-1", "--json"))
    execution_id = recorded["execution_id"]
    refused = ledger("replay", execution_id, code=1).stderr  # no --model: was "no model at …"
    assert "is not a generation" in refused and "model" not in refused, refused
    ledger("delete", "runner")
    assert "profile runner (deleted)" in ledger("run", "cohort-1").stdout  # was "profile (deleted)", no name


def test_the_cli_reads_run_ids_and_limits_as_the_api_does(ledger):
    ledger("create", "runner", "-f", "1=1")
    ledger("record-execution", "runner", "--run-id", "  pad  ")  # stored trimmed
    listed = as_json(ledger("executions", "--run-id", " pad ", "--json"))["executions"]
    assert [e["run_id"] for e in listed] == ["pad"]  # was none: the filter was not trimmed, as `ledger run`'s is
    assert "executed_at" in listed[0] and "recorded_at" not in listed[0]  # the API's name for it (was recorded_at)
    unknown = ledger("executions", "--run-id", "nope", code=1)  # was "no executions", exit 0: the API answers 404
    assert unknown.stderr == "error: no execution is recorded with run id 'nope'\n" and unknown.stdout == ""
    assert "--limit" in ledger("list", "--limit", "501", code=2).stderr  # the API's bound, 500 (it took 1000)
