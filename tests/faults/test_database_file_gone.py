"""The SQLite file a server has open is deleted or replaced under it (an operator's `rm`, a backup moved over it).
Its open connections would go on writing into the old file, unseen, answering success for writes no one can read
again. Instead every command is refused with 503 saying what happened and /ready turns 503, until the server is
restarted; a restarted server serves the file the path names now."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import httpx

from tests.faults.conftest import LedgerProcess

CALM = {"name": "calm", "steering": {"1": 1.0}}


def served(ledger_processes, database: Path) -> LedgerProcess:
    return ledger_processes(f"sqlite:///{database}", "serve", "--no-auth")


def assert_refused_saying(server: LedgerProcess, what: str) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        answer = http.post("/api/profiles", json={"name": "lost"})
        assert answer.status_code == 503, answer.text  # was 201, for a write into a file no one can open again
        assert answer.json()["error"] == "database_unavailable"
        assert f"was {what} while this process had it open" in answer.json()["detail"]
        ready = http.get("/ready")
        assert ready.status_code == 503 and what in ready.json()["detail"], ready.text
    assert "Traceback" not in server.output()


def test_a_server_whose_database_file_was_deleted_refuses_every_write_instead_of_losing_it(tmp_path, ledger_processes):
    database = tmp_path / "ledger.sqlite"
    server = served(ledger_processes, database)
    assert httpx.post(f"{server.base_url}/api/profiles", json=CALM).status_code == 201
    for path in tmp_path.glob("ledger.sqlite*"):  # the file and its write-ahead log
        path.unlink()
    assert_refused_saying(server, "deleted")
    assert not database.exists()


def test_a_server_whose_database_file_was_replaced_by_a_backup_refuses_writes_until_restarted_then_serves_the_backup(
    tmp_path, ledger_processes
):
    database, backup = tmp_path / "ledger.sqlite", tmp_path / "backup.sqlite"
    server = served(ledger_processes, database)
    assert httpx.post(f"{server.base_url}/api/profiles", json=CALM).status_code == 201
    with sqlite3.connect(database) as live, sqlite3.connect(backup) as copy:
        live.backup(copy)
    assert httpx.post(f"{server.base_url}/api/profiles", json={"name": "after the backup"}).status_code == 201
    os.replace(backup, database)  # the backup restored while the server runs
    assert_refused_saying(server, "replaced")
    server.stop()
    for stale in tmp_path.glob("ledger.sqlite-*"):  # the old file's write-ahead log: not the backup's
        stale.unlink()
    restarted = served(ledger_processes, database)
    with httpx.Client(base_url=restarted.base_url, timeout=30) as http:
        assert http.get("/api/profiles/calm").status_code == 200
        assert http.get("/api/profiles/after%20the%20backup").status_code == 404
        assert http.post("/api/profiles", json={"name": "lost"}).status_code == 201
        assert http.get("/ready").status_code == 200
