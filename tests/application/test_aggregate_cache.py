"""The aggregate cache under threads: a command's copy of a cached aggregate is never torn by another thread
fast-forwarding it (found as a 500 on ``DELETE /api/tokens/{id}`` among concurrent revocations)."""

from __future__ import annotations

import threading
import time

from ledger.access import AccessTokens
from ledger.application import ProfileLedger
from ledger.settings import Database
from ledger.tokens import TokenService

SECONDS = 6.0


def test_loads_of_an_aggregate_another_process_keeps_changing_are_whole_copies(database_url):
    reader, writer = (ProfileLedger(env=Database(database_url).eventsourcing_env()) for _ in range(2))
    try:
        tokens = TokenService(writer)
        for index in range(300):  # a copy takes long enough for a fast-forward to land in the middle of it
            tokens.issue(f"held-{index}", "reader")
        failures: list[BaseException] = []
        issued = [300]
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:
                    copy = reader.repository.get(AccessTokens.ID)
                    assert len(copy.tokens) >= copy.version - 1 >= 0, "a copy holds fewer tokens than its version says"
                except BaseException as error:  # noqa: BLE001 - reported below
                    failures.append(error)
                    stop.set()

        def write() -> None:
            while not stop.is_set():
                tokens.issue(f"new-{issued[0]}", "reader")
                issued[0] += 1

        threads = [threading.Thread(target=load) for _ in range(3)] + [threading.Thread(target=write)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline and not stop.is_set():
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join(30)
        assert not failures, failures[0]  # before: RuntimeError: dictionary changed size during iteration
        assert len(reader.repository.get(AccessTokens.ID).tokens) == issued[0]
    finally:
        reader.close()
        writer.close()
