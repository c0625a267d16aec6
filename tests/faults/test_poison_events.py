"""An event a read model cannot apply — planted with SQL, as the database's owner could — is parked with its error;
every read model still reaches the head of the log, ``/ready``, ``/metrics`` and ``ledger projections`` show it,
``ledger projections retry`` applies it once the cause is fixed, and a rebuild goes through it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from ledger.application import ProfileLedger
from ledger.settings import Database
from ledger.signing import SigningKeys
from ledger.signing.records import Sealed
from projections.runner import ProjectionWorker
from tests.api.conftest import make_client
from tests.waiting import wait_until

CLI_TIMEOUT = 120


def events_table(url: str) -> str:
    return "profileledger_events" if Database(url).is_postgres else "stored_events"


def connect(url: str) -> Any:
    if Database(url).is_postgres:
        return psycopg.connect(url, autocommit=True)
    import sqlite3

    return sqlite3.connect(Database(url).sqlite_path, isolation_level=None)


def plant(url: str, topic_suffix: str, change: dict[str, Any] | None = None, *, state: bytes | None = None,
          originator: uuid.UUID | None = None, version: int = 1) -> uuid.UUID:
    """INSERT an event with SQL: a copy of the first stored event of that type with ``change`` applied to its
    state (or with ``state`` as it is), signed with the service's key (as a release that wrote what a later read
    model cannot hold would have signed it, with the head it left on PostgreSQL, whose trigger links it), as
    ``version`` of ``originator``'s stream (default: a new one). Returns its originator id."""
    table, originator = events_table(url), originator or uuid.uuid4()
    marker = "%s" if Database(url).is_postgres else "?"
    with connect(url) as conn:
        topic, stored = conn.execute(
            f"SELECT topic, state FROM {table} WHERE topic LIKE {marker} LIMIT 1", (f"%{topic_suffix}",)
        ).fetchone()
        if state is None:
            state = json.dumps({**json.loads(Sealed.parse(stored).payload), **(change or {})}).encode()
        keys = SigningKeys.from_env(os.environ)
        state = keys.seal_all([(originator, version, topic, state)])[0]
        conn.execute(
            f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
            f"VALUES ({marker}, {marker}, {marker}, {marker})",
            (originator if Database(url).is_postgres else str(originator), version, topic, state),
        )
        if Database(url).is_postgres:
            position, link = conn.execute(
                f"SELECT notification_id, link FROM {table}_chain ORDER BY notification_id DESC LIMIT 1").fetchone()
            conn.execute(f"INSERT INTO {table}_heads VALUES (%s, %s)", (position, keys.sign_head(position, link)))
    return originator


def ledger_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger", "--database", url, *args], capture_output=True, text=True, timeout=CLI_TIMEOUT
    )


def test_a_worker_parks_what_it_cannot_apply_and_reaches_the_head(database_url):
    ledger = ProfileLedger(env=Database(database_url).eventsourcing_env(pool_size=1))
    profile = ledger.create_profile({"name": "calm", "steering": {"1": 0.5}})
    ledger.record_execution(profile.profile.id, seed=1)
    # 2**63 fits neither PostgreSQL's bigint nor SQLite's INTEGER; the undecodable event fits no read model.
    planted = plant(database_url, "Execution.Recorded", {"seed": 2**63})
    plant(database_url, "Profile.Created", state=b"{not json")
    after = ledger.create_profile({"name": "after", "steering": {"2": 1.0}})
    head = ledger.recorder.max_notification_id()
    ledger.close()

    worker = ProjectionWorker(Database(database_url))
    try:
        assert worker.catch_up() == head
        parked = worker.store.parked()
    finally:
        worker.close()
    seeds = [p for p in parked if p.originator_id == str(planted)]
    assert [p.projection for p in seeds] == ["executions"]
    assert "range" in seeds[0].error.lower() or "overflow" in seeds[0].error.lower(), seeds[0].error
    assert {p.projection for p in parked if p.originator_id != str(planted)} == {
        "profiles", "profile_versions", "active_profile", "executions", "audit"
    }

    listing = ledger_cli(database_url, "projections", "--json")
    assert listing.returncode == 1, listing.stderr  # something is parked: a cron job notices
    shown = json.loads(listing.stdout)
    assert shown["log_position"] == head and set(shown["positions"].values()) == {head}
    assert len(shown["parked"]) == len(parked)
    retried = ledger_cli(database_url, "projections", "retry", "executions")
    assert retried.returncode == 1 and "still fails" in retried.stdout, retried
    as_json = ledger_cli(database_url, "projections", "--json", "retry", "executions")  # the group's --json too
    assert as_json.returncode == 1 and json.loads(as_json.stdout)[0]["applied"] is False, as_json

    rebuilt = ledger_cli(database_url, "rebuild", "--no-progress", "--json")
    assert rebuilt.returncode == 1 and "could not be applied and are parked" in rebuilt.stderr, rebuilt
    assert set(json.loads(rebuilt.stdout).values()) == {head}
    worker = ProjectionWorker(Database(database_url))
    try:
        assert len(worker.store.parked()) == len(parked), "a rebuild parks the same events again"
    finally:
        worker.close()
    assert after.position <= head
    with make_client(database_url) as client:  # the API's rebuild job says so too
        job = client.post("/api/ledger/rebuild").json()
        done = wait_until(lambda: (lambda seen: seen if seen["state"] != "running" else None)(
            client.get(job["url"]).json()), 60, "the rebuild to end")
    assert done["state"] == "succeeded" and done["parked"] == {
        name: sum(1 for p in parked if p.projection == name) for name in {p.projection for p in parked}}


@pytest.mark.postgres
def test_out_of_range_values_are_refused_and_a_planted_one_does_not_stop_a_running_server(postgres_url, ledger_processes):
    server = ledger_processes(postgres_url, "serve", "--no-auth")
    base = server.base_url
    made = httpx.post(f"{base}/api/profiles", json={"name": "calm", "steering": {"1": 0.5}, "layer": 3}).json()
    # The attack through the API is refused at the edge now: nothing of it reaches the log.
    for url, body in (
        ("/api/profiles", {"name": "deep", "layer": 2**31}),
        (f"/api/profiles/{made['id']}/executions", {"seed": 2**63}),
        (f"/api/profiles/{made['id']}/executions", {"entity_count": 2**63}),
        ("/api/profiles/import", {"name": "deep", "layer": 2**31, "steering": {"1": 1.0}}),
    ):
        refused = httpx.post(f"{base}{url}", json=body)
        assert refused.status_code == 422 and refused.json()["field"] in ("layer", "seed", "entity_count"), refused.text
    poison = plant(postgres_url, "Profile.Created", {"layer": 2**31, "name": "deep"})
    later = httpx.post(f"{base}/api/profiles", json={"name": "later", "steering": {"1": 0.5}}).json()

    # Writes after the poison event are readable at once (no 504): every read model went on.
    read = httpx.get(f"{base}/api/profiles/{later['id']}", params={"min_position": later["position"]}, timeout=30)
    assert read.status_code == 200, read.text
    ready = httpx.get(f"{base}/ready", timeout=30)
    assert ready.status_code == 200, ready.text
    body = ready.json()
    by_name = {p["name"]: p for p in body["projections"]}
    assert by_name["profiles"]["parked"] == 1 and by_name["profile_versions"]["parked"] == 1
    assert all(p["lag"] == 0 for p in body["projections"])
    assert "parked" in body["detail"] and "ledger projections" in body["detail"]
    metrics = httpx.get(f"{base}/metrics").text
    assert 'ledger_projection_parked_events{projection="profiles"} 1' in metrics

    listing = ledger_cli(postgres_url, "projections")
    assert listing.returncode == 1 and "NumericValueOutOfRange" in listing.stdout, listing
    assert ledger_cli(postgres_url, "projections", "retry").returncode == 1

    # The fix (here: wider columns); then the retry applies the parked events and the profile can be read.
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE profiles ALTER COLUMN layer TYPE bigint")
        conn.execute("ALTER TABLE profile_versions ALTER COLUMN layer TYPE bigint")
    retried = ledger_cli(postgres_url, "projections", "retry")
    assert retried.returncode == 0, retried
    assert retried.stdout.count("applied") == 2
    assert ledger_cli(postgres_url, "projections").returncode == 0  # nothing parked any more
    shown = httpx.get(f"{base}/api/profiles/{poison}", timeout=30)
    assert shown.status_code == 200 and shown.json()["layer"] == 2**31, shown.text
    assert httpx.get(f"{base}/ready").json()["detail"] is None

    started = httpx.post(f"{base}/api/ledger/rebuild", timeout=120)
    assert started.status_code == 202, started.text
    job = wait_until(lambda: (found := httpx.get(f"{base}{started.json()['url']}").json())["state"] != "running"
                     and found, timeout=120, what="the rebuild job")
    assert job["state"] == "succeeded", job
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/ready").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert httpx.get(f"{base}/api/profiles/{made['id']}").status_code == 200


@pytest.mark.postgres
def test_a_retry_never_sets_a_profile_back_behind_a_revision_applied_since(postgres_url):
    ledger = ProfileLedger(env=Database(postgres_url).eventsourcing_env(pool_size=1))
    calm = ledger.create_profile({"name": "calm", "steering": {"1": 0.5}, "layer": 3}).profile.id
    ledger.update_profile(calm, {"steering": {"2": 1.0}})  # version 2
    plant(postgres_url, "Profile.SpecRevised", {"layer": 2**31, "version": 3}, originator=calm, version=3)
    ledger.update_profile(calm, {"steering": {"3": 2.0}, "layer": 3})  # version 4, after the parked 3
    ledger.close()
    worker = ProjectionWorker(Database(postgres_url))
    try:
        worker.catch_up()
        assert {p.projection for p in worker.store.parked()} == {"profiles", "profile_versions"}
    finally:
        worker.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # the fix; version 3 could now be applied
        conn.execute("ALTER TABLE profiles ALTER COLUMN layer TYPE bigint")
        conn.execute("ALTER TABLE profile_versions ALTER COLUMN layer TYPE bigint")

    retried = ledger_cli(postgres_url, "projections", "retry")
    assert retried.returncode == 1 and retried.stdout.count("ledger rebuild") == 2, retried
    shown = json.loads(ledger_cli(postgres_url, "show", str(calm), "--json").stdout)
    assert shown["version"] == 4 and shown["steering"] == {"3": 2.0} and shown["layer"] == 3, shown

    rebuilt = ledger_cli(postgres_url, "rebuild", "--no-progress")
    assert rebuilt.returncode == 0, rebuilt
    assert ledger_cli(postgres_url, "projections").returncode == 0  # nothing parked any more
    shown = json.loads(ledger_cli(postgres_url, "show", str(calm), "--json").stdout)
    assert shown["version"] == 4 and shown["steering"] == {"3": 2.0}, shown
