"""No request holds the event log's lock indefinitely: large bodies are refused or recorded (never hang), a write
that cannot take the lock is rolled back and answered 503 within the timeout, and ``/ready`` says when writes
cannot commit. Real servers, real PostgreSQL, a real conflicting lock."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from ledger.application import ProfileLedger
from ledger.errors import ValidationError
from ledger.settings import Database
from ledger.write_path import EVENT_BYTES_MAX, WRITE_STATEMENT_TIMEOUT_SECONDS

pytestmark = pytest.mark.postgres

LOCK_TIMEOUT_SECONDS = 5  # POSTGRES_LOCK_TIMEOUT (ledger.settings)
SAVE_BOUND_SECONDS = 60.0


def test_a_large_body_is_refused_at_once_by_a_running_server(postgres_url, ledger_processes):
    base = ledger_processes(postgres_url, "serve", "--no-auth").base_url
    for megabytes in (3, 7, 8):
        started = time.monotonic()
        response = httpx.post(
            f"{base}/api/profiles", json={"name": f"big{megabytes}", "metadata": {"blob": "x" * megabytes * 10**6}},
            timeout=30,
        )
        assert response.status_code == 413, response.text
        assert time.monotonic() - started < 10
    response = httpx.post(f"{base}/api/profiles", json={"name": "fits", "metadata": {"blob": "x" * 60_000}}, timeout=30)
    assert response.status_code == 201, response.text


def test_concurrent_multi_megabyte_saves_share_a_batch_and_never_hang(postgres_url):
    """The saves the library's pipelined insert deadlocks on: four events of ~3.9 MB, which group commit inserts
    as one ~16 MB INSERT (with the pipeline, the first round hung for ever). Each must finish in bounded time."""
    ledger = ProfileLedger(env=Database(postgres_url).eventsourcing_env(pool_size=4))

    def large(name: str) -> int:
        return ledger.record_execution(None, details={"blob": name * (3_900_000 // len(name))}).position

    pool = ThreadPoolExecutor(4)
    try:
        for round_number in range(3):
            futures = [pool.submit(large, f"large-{round_number}-{i}") for i in range(4)]
            positions = [future.result(timeout=SAVE_BOUND_SECONDS) for future in futures]
            assert len(set(positions)) == 4
        with pytest.raises(ValidationError, match="too large to record"):
            ledger.record_execution(None, details={"blob": "x" * (EVENT_BYTES_MAX + 1)})
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a hung save must fail the test, not hang it
        ledger.close()


def test_a_write_blocked_by_a_held_lock_is_rolled_back_with_503_and_ready_says_so(postgres_url, ledger_processes):
    base = ledger_processes(postgres_url, "serve", "--no-auth").base_url
    assert httpx.post(f"{base}/api/profiles", json={"name": "first", "steering": {"1": 1.0}}).status_code == 201
    assert httpx.get(f"{base}/ready", timeout=30).status_code == 200
    released = threading.Event()
    holding = threading.Event()

    def hold_the_lock() -> None:  # what a stuck insert in another process looks like to this one
        with psycopg.connect(postgres_url) as conn, conn.transaction():
            conn.execute("LOCK TABLE profileledger_events IN EXCLUSIVE MODE")
            holding.set()
            released.wait(60)

    holder = threading.Thread(target=hold_the_lock, daemon=True)
    holder.start()
    assert holding.wait(30)
    try:
        started = time.monotonic()
        blocked = httpx.post(f"{base}/api/profiles", json={"name": "blocked", "steering": {"1": 1.0}}, timeout=60)
        elapsed = time.monotonic() - started
        assert blocked.status_code == 503, blocked.text
        assert blocked.json()["error"] == "write_timeout" and "nothing was recorded" in blocked.json()["detail"]
        assert blocked.headers["Retry-After"]
        assert LOCK_TIMEOUT_SECONDS - 1 <= elapsed < LOCK_TIMEOUT_SECONDS + WRITE_STATEMENT_TIMEOUT_SECONDS
        ready = httpx.get(f"{base}/ready", timeout=30)
        assert ready.status_code == 503 and "writes cannot commit" in ready.json()["detail"], ready.text
    finally:
        released.set()
        holder.join(30)
    assert httpx.get(f"{base}/ready", timeout=30).status_code == 200
    after = httpx.post(f"{base}/api/profiles", json={"name": "blocked", "steering": {"1": 1.0}}, timeout=30)
    assert after.status_code == 201, "the refused write recorded nothing, so its name is still free"
