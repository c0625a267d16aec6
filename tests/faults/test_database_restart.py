"""PostgreSQL goes away while writes flow and comes back: the server reconnects by itself, requests during the
outage fail at once with 503 ``database_unavailable`` in the error shape (none hangs), and no acknowledged write
is lost."""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from uuid import UUID

import httpx
import psycopg
import pytest

from ledger.application import ProfileLedger
from ledger.recorders import UNREACHABLE_HOLD_S
from ledger.settings import Database
from tests.postgres_server import PostgresServer
from tests.waiting import wait_until as wait_for

pytestmark = pytest.mark.postgres

WRITERS = 8
SLOWEST_ANSWER = 15.0
POOL_WAIT_S = 3.0  # POSTGRES_CONNECT_TIMEOUT: how long a call waits for a pooled connection
READ_SIDE_RECOVERY = 30.0  # the pool's connect timeout is 5 s: no request may hang much past it


@contextmanager
def database_down(server: PostgresServer) -> Iterator[None]:
    """Stop PostgreSQL (fast: connections are cut) and start it again with the same options on leaving."""
    if server.data_dir is None:
        pytest.skip("needs a PostgreSQL server these tests started")
    recorded = shlex.split((server.data_dir / "postmaster.opts").read_text())
    options = shlex.join(arg for i, arg in enumerate(recorded[1:], 1) if arg != "-D" and recorded[i - 1] != "-D")
    server.pg_ctl("stop", "-m", "fast")
    try:
        yield
    finally:
        server.pg_ctl("start", "-o", options, "-l", str(server.data_dir.parent / "server.log"))


@dataclass
class Traffic:
    created: list[tuple[str, int]] = field(default_factory=list)  # (profile id, position) of each 201
    refused: list[httpx.Response] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    slowest: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> tuple[int, int]:
        with self.lock:
            return len(self.created), len(self.refused)


def test_the_server_rides_out_a_database_restart(postgres_server, postgres_url, credentials, ledger_processes):
    server = ledger_processes(postgres_url, "serve")
    traffic, stop = Traffic(), threading.Event()

    def write(number: int) -> None:
        with httpx.Client(base_url=server.base_url, headers=credentials.editor, timeout=60) as http:
            for k in range(100_000):
                if stop.is_set():
                    return
                started = time.monotonic()
                response = http.post("/api/profiles", json={"name": f"w{number}-{k}", "steering": {"1": 1.0}})
                took = time.monotonic() - started
                with traffic.lock:
                    traffic.slowest = max(traffic.slowest, took)
                    if response.status_code == 201:
                        traffic.created.append((response.json()["id"], response.json()["position"]))
                    elif response.status_code == 503:
                        traffic.refused.append(response)
                    else:
                        traffic.other.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: traffic.count()[0] >= 20, 30, "writes before the outage")
        with database_down(postgres_server):
            wait_for(lambda: traffic.count()[1] >= WRITERS, 30, "requests refused during the outage")
        before_recovery = traffic.count()[0]
        wait_for(lambda: traffic.count()[0] >= before_recovery + 20, 30, "writes after the database came back")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)

    assert not traffic.other, traffic.other[:3]
    assert traffic.slowest < SLOWEST_ANSWER, f"a request took {traffic.slowest:.1f} s"
    for response in traffic.refused:
        body = response.json()
        assert body["error"] == "database_unavailable" and body["detail"], body
        assert response.headers["Retry-After"] == "1"

    ledger = ProfileLedger(env=Database(postgres_url).eventsourcing_env(pool_size=1))
    try:
        for profile_id, _ in traffic.created:
            assert ledger.get_profile(UUID(profile_id)).id == UUID(profile_id), "an acknowledged write was lost"
    finally:
        ledger.close()
    last_id, last_position = max(traffic.created, key=lambda made: made[1])

    def read_side_caught_up() -> bool:
        seen = httpx.get(
            f"{server.base_url}/api/profiles/{last_id}",
            params={"min_position": last_position},
            headers=credentials.editor,
            timeout=30,
        )
        assert seen.status_code in (200, 504), seen.text
        return seen.status_code == 200

    # the projections reconnect on their own schedule (their pool's timeout, the listener's retry)
    wait_for(read_side_caught_up, READ_SIDE_RECOVERY, "the read side to recover")
    assert server.process.poll() is None, "the server process is still the same one"


QUIET_OUTAGE_S = 20.0
BACK_WITHIN_S = 5.0


def test_a_server_without_traffic_during_an_outage_answers_within_seconds_of_its_database(
        postgres_server, postgres_url, credentials, ledger_processes):
    """A pool doubles its wait between attempts to replace a connection it lost; without a ceiling, a server that
    lost all its connections early in a 20 s outage and saw no traffic after would wait about as long again
    (answering 503) before it tried once more."""
    server = ledger_processes(postgres_url, "serve")
    with httpx.Client(base_url=server.base_url, headers=credentials.editor, timeout=30) as http:
        assert http.get("/api/profiles").status_code == 200
        with database_down(postgres_server):
            for _ in range(100):  # until the pool has no connection left to hand out (a request waits for one)
                started = time.monotonic()
                assert http.get("/api/profiles").status_code == 503
                if time.monotonic() - started > 1.0:
                    break
            time.sleep(QUIET_OUTAGE_S)
        back = time.monotonic()
        wait_for(lambda: http.get("/api/profiles").status_code == 200, 90, "the server to answer again")
        took = time.monotonic() - back
        assert took < BACK_WITHIN_S, f"answered again {took:.1f} s after its database"


def test_the_first_request_after_a_database_restart_finds_a_working_connection(
    postgres_server, postgres_url, credentials, ledger_processes
):
    server = ledger_processes(postgres_url, "serve", "--no-projections")
    with httpx.Client(base_url=server.base_url, headers=credentials.editor, timeout=60) as http:
        start = threading.Barrier(16)

        def busy(number: int) -> None:  # fills the server's pool with connections that the restart will break
            start.wait()
            http.post("/api/profiles", json={"name": f"busy {number}"})
            http.get("/api/profiles", params={"limit": 5})

        threads = [threading.Thread(target=busy, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with database_down(postgres_server):
            pass  # back at once (pg_ctl waits until it accepts connections); every pooled connection is broken

        first = http.get("/api/profiles", params={"limit": 1})
        assert first.status_code == 200, first.text
        assert http.post("/api/profiles", json={"name": "after the restart"}).status_code == 201


def test_a_projection_worker_started_while_its_database_is_away_waits_for_it_and_follows_on(
        postgres_server, postgres_url, ledger_processes):
    app = ProfileLedger(env=Database(postgres_url).eventsourcing_env(pool_size=1))
    try:
        app.create_profile({"name": "before"})  # the tables are there: the worker starts at once
    finally:
        app.close()
    with database_down(postgres_server):
        worker = ledger_processes(postgres_url, "project")
        time.sleep(8)  # past the pool's wait for a connection, more than once
        assert worker.process.poll() is None, worker.output()  # before: exit 75, for good
    app = ProfileLedger(env=Database(postgres_url).eventsourcing_env(pool_size=1))
    try:
        app.create_profile({"name": "after"})
    finally:
        app.close()

    def projected() -> bool:
        with psycopg.connect(postgres_url) as conn:
            try:
                return conn.execute("SELECT 1 FROM profiles WHERE name = 'after'").fetchone() is not None
            except psycopg.errors.UndefinedTable:  # the worker has not made its tables yet
                return False

    wait_for(projected, 60, "the worker to project what was written after the outage")
    assert worker.process.poll() is None and "Traceback" not in worker.output(), worker.output()


def test_during_an_outage_a_write_and_ready_answer_503_after_one_wait_for_a_connection_not_two(
        postgres_server, postgres_url, credentials, ledger_processes):
    """A proxy in front commonly gives up after 5 s: the pool's wait for a connection (3 s) is spent once."""
    server = ledger_processes(postgres_url, "serve")
    with httpx.Client(base_url=server.base_url, headers=credentials.editor, timeout=30) as http:
        assert http.post("/api/profiles", json={"name": "before"}).status_code == 201
        with database_down(postgres_server):
            for path, send in (("/ready", lambda: http.get("/ready")),
                               ("/api/profiles", lambda: http.post("/api/profiles", json={"name": "during"}))):
                time.sleep(UNREACHABLE_HOLD_S + 0.5)  # each finds the pool's last failure forgotten
                started = time.monotonic()
                assert send().status_code == 503, path
                took = time.monotonic() - started
                assert took < 2 * POOL_WAIT_S - 0.5, f"{path} answered 503 after {took:.1f} s"
