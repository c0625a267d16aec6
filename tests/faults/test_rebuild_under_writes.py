"""A rebuild while a server takes writes, met as an operator meets it: a real ``ledger serve`` answering clients that
create profiles, and ``ledger rebuild`` run beside it on the same database. The rebuild waits its turn to write
(on SQLite, one writer at a time) rather than failing as if the database were gone, and the read models it swaps
in hold every write."""

from __future__ import annotations

import subprocess
import sys
import threading

import httpx

from tests.faults.conftest import ROOT


def test_ledger_rebuild_beside_a_server_taking_writes_succeeds_and_loses_none_of_them(database_url,
                                                                                   ledger_processes):
    server = ledger_processes(database_url, "serve", "--no-auth")
    done = threading.Event()
    created: list[str] = []

    def write(writer: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            while not done.is_set():
                answer = http.post("/api/profiles", json={"name": f"w{writer}-{len(created)}", "steering": {"1": 1}})
                assert answer.status_code == 201, answer.text
                created.append(answer.json()["id"])

    writers = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    for writer in writers:
        writer.start()
    try:
        for _ in range(3):
            rebuilt = subprocess.run([sys.executable, "-m", "ledger", "--database", database_url, "rebuild",
                                      "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert rebuilt.returncode == 0, rebuilt.stderr
    finally:
        done.set()
        for writer in writers:
            writer.join()
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        listed, cursor = set(), None
        while True:
            page = http.get("/api/profiles", params={"limit": 500, **({"cursor": cursor} if cursor else {})}).json()
            listed |= {profile["id"] for profile in page["profiles"]}
            if not (cursor := page["next_cursor"]):
                break
    assert listed == set(created) and created
