"""The ``ledger`` command, run as a user would run it (a subprocess), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.fixture
def ledger_cli(database_url, tmp_path):
    def run(*args: str, ok: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "ledger", "--database", database_url, *args],
            capture_output=True, text=True, cwd=tmp_path, input=stdin, timeout=120,
        )
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    return run


def as_json(result: subprocess.CompletedProcess):
    return json.loads(result.stdout)


def test_a_profile_lifecycle_through_the_cli(ledger_cli, tmp_path):
    created = as_json(ledger_cli("create", "Calm", "-f", "1=0.5", "-t", "mood", "--actor", "alice", "--json"))
    pid = created["profile"]["id"]
    ledger_cli("update", pid, "--steering", '{"2": 1.5}', "--reason", "stronger", "--actor", "bob")
    ledger_cli("update", pid, "--description", "quiet", "--no-bump-version")
    assert as_json(ledger_cli("show", pid, "--version", "1", "--json"))["steering"] == {"1": 0.5}
    now = as_json(ledger_cli("show", pid, "--json"))
    assert (now["version"], now["steering"], now["description"]) == (2, {"2": 1.5}, "quiet")
    history = as_json(ledger_cli("history", pid, "--json"))
    assert [(h["version"], h["actor"], h["reason"]) for h in history] == [(1, "alice", None), (2, "bob", "stronger")]
    versions = as_json(ledger_cli("versions", pid, "--json"))["versions"]
    assert [h["event_type"] for h in history] == [v["event_type"] for v in versions] == [
        "Profile.Created", "Profile.SpecRevised"
    ]  # one name for an event type, whichever command shows it
    ledger_cli("activate", pid, "--version", "1")
    refused = ledger_cli("delete", pid, ok=False)
    assert refused.returncode == 1 and "is active" in refused.stderr
    ledger_cli("deactivate")
    exported = tmp_path / "calm.json"
    ledger_cli("export", pid, "-o", str(exported))
    ledger_cli("delete", pid)
    imported = as_json(ledger_cli("import", str(exported), "--json"))
    assert imported["profile"]["steering"] == {"2": 1.5} and imported["profile"]["name"] == "Calm"
    marked = tmp_path / "calm-bom.json"  # as some editors save it: a UTF-8 byte-order mark first
    marked.write_bytes(b"\xef\xbb\xbf" + exported.read_bytes())
    again = as_json(ledger_cli("import", str(marked), "--rename", "--json"))
    assert again["profile"]["steering"] == {"2": 1.5}
    piped = as_json(ledger_cli("import", "-", "--rename", "--json", stdin=marked.read_bytes().decode("utf-8")))
    assert piped["profile"]["steering"] == {"2": 1.5}


def test_the_log_prints_every_event_with_actor_and_time_in_commit_order(ledger_cli):
    pid = as_json(ledger_cli("create", "p", "--actor", "alice", "--json"))["profile"]["id"]
    ledger_cli("record-execution", pid, "--run-id", "cohort-7", "--seed", "42", "--actor", "runner")
    entries = as_json(ledger_cli("log", "--json"))
    assert [e["position"] for e in entries] == sorted(e["position"] for e in entries)
    assert [(e["actor"], e["type"]) for e in entries] == [
        ("alice", "Profile.Created"), ("alice", "ProfileName.Registered"), ("alice", "ProfileName.Claimed"),
        ("runner", "Execution.Recorded"),
    ]
    assert all(e["time"] for e in entries)
    text = ledger_cli("log").stdout.splitlines()
    assert len(text) == 4 and "alice" in text[0] and "Profile.Created" in text[0]


def test_the_logs_json_says_of_each_event_what_the_apis_events_say(ledger_cli, database_url):
    import httpx

    from tests.api.conftest import start_server

    ledger_cli("create", "calm", "-f", "1=0.5", "--actor", "alice")
    ledger_cli("update", "calm", "-f", "1=0.7", "--reason", "stronger")
    ledger_cli("activate", "calm", "--version", "1")
    logged = as_json(ledger_cli("log", "--json"))
    running = start_server(database_url)
    try:
        events = httpx.get(f"{running.base_url}/api/events", params={"limit": 100}).json()["events"]
    finally:
        running.stop()
    said = ("position", "type", "actor", "reason", "profile_id", "correlation_id", "data")  # (the last three were not)
    assert [[entry[key] for key in said] for entry in logged] == [[event[key] for key in said] for event in events]
    assert {"version": 2, "pinned_version": 1} in [entry["data"] for entry in logged]  # which version it pinned


def test_the_log_answers_who_deleted_a_profile_and_refuses_a_start_it_never_reached(ledger_cli):
    pid = as_json(ledger_cli("create", "calm", "--actor", "alice", "--json"))["profile"]["id"]
    ledger_cli("create", "other", "--actor", "carol")
    ledger_cli("delete", "calm", "--actor", "boss", "--reason", "retired")
    ledger_cli("restore", "calm", "--actor", "alice")
    deleted = as_json(ledger_cli("log", "--profile", "calm", "--type", "Profile.Deleted", "--json"))
    assert [(e["actor"], e["reason"], e["aggregate_id"]) for e in deleted] == [("boss", "retired", pid)]
    lifecycle = [e["type"] for e in as_json(ledger_cli("log", "--profile", pid, "--json"))]
    assert lifecycle == ["Profile.Created", "ProfileName.Claimed", "Profile.Deleted", "ProfileName.Released",
                         "Profile.Restored", "ProfileName.Claimed"]  # and none of the other profile's
    assert {e["actor"] for e in as_json(ledger_cli("log", "--actor", " carol ", "--json"))} == {"carol"}  # trimmed
    assert len(as_json(ledger_cli("log", "--profile", "  ", "--json"))) == len(as_json(ledger_cli("log", "--json")))
    assert len(as_json(ledger_cli("log", "--profile", "calm", "--limit", "2", "--json"))) == 2
    head = as_json(ledger_cli("log", "--json"))[-1]["position"]
    past = ledger_cli("log", "--after", str(head + 1), ok=False)
    assert past.returncode == 1 and "past the log's head" in past.stderr  # before: nothing printed, exit 0
    unknown = ledger_cli("log", "--type", "Profile.Nope", ok=False)
    assert unknown.returncode == 1 and "no event type of this log" in unknown.stderr


def test_a_query_on_read_models_an_earlier_version_made_says_what_to_run_and_db_init_makes_them_again(
        ledger_cli, database_url):
    from tests.faults.test_read_model_forgery import sql

    ledger_cli("create", "calm")
    sql(database_url, "ALTER TABLE profiles DROP COLUMN description_bytes")  # as the version before made it
    sql(database_url, "UPDATE read_model_definitions SET definition = 'v3-earlier' WHERE name = 'profiles'")
    stale = ledger_cli("list", ok=False)
    assert stale.returncode == 1 and "made by another version" in stale.stderr and "ledger db init" in stale.stderr
    # before: exit 75, "the database cannot be reached (no such column: description_bytes); try again once it is back"
    ledger_cli("db", "init")
    assert "calm" in ledger_cli("list").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "not-a-uuid"), "no profile is named 'not-a-uuid'"),
        (("show", "00000000-0000-0000-0000-000000000000"), "not found"),
        (("create", ""), "name must not be empty"),
        (("create", "x", "-f", "abc=1"), "feature index must be a non-negative integer"),
        (("import", "/nonexistent/file.json"), "cannot read"),
    ],
)
def test_errors_are_one_clear_line_and_a_non_zero_exit(ledger_cli, args, message):
    ledger_cli("db", "init")
    result = ledger_cli(*args, ok=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_list_and_executions_answer_from_the_read_models(ledger_cli):
    a = as_json(ledger_cli("create", "Alpha", "-t", "mood", "-t", "x", "--json"))["profile"]["id"]
    as_json(ledger_cli("create", "Beta", "-t", "mood", "--description", "quiet one", "--json"))
    ledger_cli("create", "Gamma", "-t", "other")
    listed = as_json(ledger_cli("list", "--tag", "mood", "--json"))["profiles"]
    assert [p["name"] for p in listed] == ["Alpha", "Beta"]
    assert [p["name"] for p in as_json(ledger_cli("list", "--tag", "mood", "--tag", "x", "--all-tags", "--json"))["profiles"]] == ["Alpha"]
    assert [p["name"] for p in as_json(ledger_cli("list", "--search", "QUIET", "--json"))["profiles"]] == ["Beta"]
    ledger_cli("record-execution", a, "--run-id", "cohort-1", "--seed", "7", "--entity-count", "10")
    executions = as_json(ledger_cli("executions", a, "--json"))["executions"]
    assert [(e["run_id"], e["seed"], e["profile_version"]) for e in executions] == [("cohort-1", 7, 1)]
    assert "cohort-1" in ledger_cli("executions", "--run-id", "cohort-1").stdout
    ledger_cli("record-execution", a, "--run-id", "cohort-2")  # no seed, no entity count: shown as "-"
    assert "seed=-  status=success" in ledger_cli("executions", "--run-id", "cohort-2").stdout
    assert "seed: -   entity count: -" in ledger_cli("spec", "cohort-2").stdout
    assert "status:" not in ledger_cli("spec", "cohort-2").stdout  # said only when the attempt did not succeed
    ledger_cli("record-execution", a, "--run-id", "cohort-2", "--status", "failed", "--error-message", "boom")
    assert "  status: failed (boom)" in ledger_cli("spec", "cohort-2").stdout
    ledger_cli("create", "Delta", "--product", "p")
    ledger_cli("create", "Eps", "--product", "q")
    either = as_json(ledger_cli("list", "--product", "p", "--product", "q", "--json"))["profiles"]
    assert [p["name"] for p in either] == ["Delta", "Eps"]  # any of them


def test_rebuild_reports_each_read_model(ledger_cli):
    ledger_cli("create", "one")
    rebuilt = as_json(ledger_cli("rebuild", "--no-progress", "--json"))
    assert rebuilt and all(position >= 3 for position in rebuilt.values())


def test_show_and_diff_print_strengths_exactly_as_stored(ledger_cli):
    pid = as_json(ledger_cli("create", "Fine", "-f", "1=1.23456789", "--json"))["profile"]["id"]
    ledger_cli("update", pid, "--steering", '{"1": 1.23456781, "2": 0.1}')
    assert "1=1.23456781, 2=0.1" in ledger_cli("show", pid).stdout
    diff = ledger_cli("diff", pid).stdout
    assert "steering 1: 1.23456789 → 1.23456781" in diff and "steering +2=0.1" in diff
