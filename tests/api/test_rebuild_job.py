"""``POST /api/ledger/rebuild`` starts a job (202) to poll on any server; one rebuild at a time across all
processes."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import threading

import httpx
import psycopg

from ledger.settings import Database
from projections.schema import hold_rebuild_lock
from ledger.api.commands import PENDING_HEADER
from tests.api.conftest import assert_error, create, make_client, start_server
from tests.waiting import wait_until


def test_a_rebuild_is_a_job_to_poll_and_queries_see_the_same_afterwards(database_url):
    with make_client(database_url) as client:
        made = create(client, "kept")
        misspelt = client.post("/api/ledger/rebuild", json={"projection": "audit"})  # a rebuild takes no fields
        assert assert_error(misspelt, 422, "invalid_request")["field"] == "projection"  # refused, not ignored
        started = client.post("/api/ledger/rebuild", headers={"X-Actor": "ops-ann"})  # open mode: the actor named
        assert started.status_code == 202, started.text
        job = started.json()
        assert job["started_by"] == "ops-ann"
        assert job["state"] in ("running", "succeeded") and started.headers["Location"] == job["url"]
        done = wait_until(lambda: (lambda seen: seen if seen["state"] != "running" else None)(
            client.get(job["url"]).json()), 60, "the rebuild to end")
        assert done["state"] == "succeeded" and done["finished_at"] and done["error"] is None
        assert done["started_by"] == "ops-ann"
        assert set(done["positions"].values()) == {made["position"]}
        assert done["progress"] == {"position": made["position"], "head": made["position"]}  # how far it read
        assert client.get(f"/api/profiles/{made['id']}").json()["name"] == "kept"
        for unknown in ("unknown", "%00", "a%00b", "0" * 32):  # a NUL was a 500 on PostgreSQL
            assert_error(client.get(f"/api/ledger/rebuilds/{unknown}"), 404, "not_found")


def test_a_second_rebuild_meanwhile_is_refused_with_409(database_url):
    with make_client(database_url) as client:
        release = hold_rebuild_lock(Database(database_url))  # a rebuild running (in another process, on PostgreSQL)
        try:
            assert_error(client.post("/api/ledger/rebuild"), 409, "rebuild_in_progress")
        finally:
            release()
        started = client.post("/api/ledger/rebuild")
        assert started.status_code == 202
        ended(client, started.json())  # not left running into the next test


def test_a_keyed_rebuild_refused_while_another_runs_is_not_refused_again_on_its_retry(database_url):
    with make_client(database_url) as client:
        key = {"Idempotency-Key": "rebuild-once"}
        release = hold_rebuild_lock(Database(database_url))
        try:
            assert_error(client.post("/api/ledger/rebuild", headers=key), 409, "rebuild_in_progress")
        finally:
            release()
        retried = client.post("/api/ledger/rebuild", headers=key)  # a refusal for a moment: the retry runs
        assert retried.status_code == 202 and "Idempotent-Replayed" not in retried.headers
        ended(client, retried.json())


def ended(client, job):
    return wait_until(lambda: (lambda seen: seen if seen["state"] != "running" else None)(
        client.get(job["url"]).json()), 60, "the rebuild to end")


HOLDER = ("import sys; from ledger.settings import Database; from projections.schema import hold_rebuild_lock; "
          "release = hold_rebuild_lock(Database(sys.argv[1])); print('held', flush=True); sys.stdin.read()")


def test_the_lock_is_the_databases_not_the_process_and_dies_with_its_holder(database_url, tmp_path):
    """Another process rebuilding (a server, or ``ledger rebuild``) holds the lock: on SQLite too, whose servers
    share one file."""
    holder_url = database_url
    if not database_url.startswith("postgresql"):  # another spelling of the same file: a link to it
        (tmp_path / "link.sqlite").symlink_to(database_url.removeprefix("sqlite:///"))
        holder_url = f"sqlite:///{tmp_path / 'link.sqlite'}"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, holder_url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        with make_client(database_url) as client:
            create(client, "kept")
            assert_error(client.post("/api/ledger/rebuild"), 409, "rebuild_in_progress")
            cli = subprocess.run([sys.executable, "-m", "ledger", "--database", database_url, "rebuild"],
                                 capture_output=True, text=True, timeout=60)
            assert cli.returncode == 1 and "a rebuild of the read models is already running" in cli.stderr, cli
            holder.kill()  # a holder that dies lets it go (once PostgreSQL sees its connection closed: a moment)
            holder.wait()
            started = wait_until(lambda: (lambda answer: answer if answer.status_code == 202 else None)(
                client.post("/api/ledger/rebuild")), 30, "the dead holder's lock to be let go")
            ended(client, started.json())
    finally:
        holder.kill()


def test_any_server_on_the_database_answers_for_a_job_and_one_whose_server_stopped_is_failed(database_url):
    with make_client(database_url) as started_on, make_client(database_url) as polled_on:
        create(started_on, "kept")
        job = started_on.post("/api/ledger/rebuild").json()
        done = wait_until(lambda: (lambda seen: seen if seen["state"] != "running" else None)(
            polled_on.get(job["url"]).json()), 60, "the rebuild to end, seen from the other server")
        assert done["state"] == "succeeded" and done["positions"], done

    running = "UPDATE ledger_rebuild_jobs SET job = replace(job, '\"succeeded\"', '\"running\"')"
    if database_url.startswith("postgresql"):  # a job whose server died while it ran
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(running)
    else:
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as conn, conn:
            conn.execute(running)
    with make_client(database_url) as client:
        orphan = client.get(job["url"]).json()
        assert orphan["state"] == "failed" and "stopped" in orphan["error"], orphan
        assert client.post("/api/ledger/rebuild").status_code == 202  # the lock was free all along


def test_a_rebuild_that_lost_the_database_says_so_and_that_it_may_be_started_again(database_url, monkeypatch):
    import eventsourcing.persistence
    import projections.runner

    def database_gone(*args, **kwargs):
        raise eventsourcing.persistence.OperationalError("the connection was closed")

    with make_client(database_url) as client:
        monkeypatch.setattr(projections.runner, "rebuild", database_gone)
        started = client.post("/api/ledger/rebuild")
        assert started.status_code == 202, started.text
        done = ended(client, started.json())
        assert done["state"] == "failed" and "database became unreachable" in done["error"], done
        monkeypatch.undo()
        again = client.post("/api/ledger/rebuild")
        assert again.status_code == 202 and ended(client, again.json())["state"] == "succeeded"


def test_writes_during_rebuilds_on_servers_without_a_worker_are_caught_up_and_reads_see_every_write(database_url):
    """Servers with ``--no-projections`` rely on inline writing, which goes on only from the log's head: writes that
    found a read model being swapped in were left to a worker that may not be running."""
    running = start_server(database_url, run_projections=False)
    stop, written = threading.Event(), []

    def write() -> None:
        with httpx.Client(base_url=running.base_url, timeout=30) as http:
            while not stop.is_set():
                made = http.post("/api/profiles", json={"name": f"w{len(written)}"}, headers={"Prefer": "respond-async"})
                written.append(made.status_code)

    writer = threading.Thread(target=write)
    try:
        with httpx.Client(base_url=running.base_url, timeout=30) as http:
            writer.start()
            for _ in range(4):
                job = http.post("/api/ledger/rebuild").json()
                assert ended(http, job)["state"] == "succeeded"
            stop.set()
            writer.join()
            assert set(written) == {201}
            made = http.post("/api/profiles", json={"name": "after the rebuilds"})
            assert made.status_code == 201 and PENDING_HEADER not in made.headers, made.headers
            assert http.get(f"/api/profiles/{made.json()['id']}").status_code == 200
            assert http.get("/ready").status_code == 200
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        running.stop()
