"""An application that cannot reach its database as it starts (a worker started before PostgreSQL) fails at once,
leaving nothing behind: its pool is closed as it fails, not later by the garbage collector from one of the pool's
own threads (which cannot join themselves: a traceback in a worker's output, as it waited for its database)."""

from __future__ import annotations

import threading

import pytest

from ledger.application import ProfileLedger
from ledger.outages import is_database_unavailable
from ledger.settings import Database
from tests.api.conftest import free_port


def test_an_application_that_cannot_reach_its_database_closes_its_pool_as_it_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("LEDGER_SIGNING_KEY", str(tmp_path / "absent.pem"))
    before = set(threading.enumerate())
    database = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    with pytest.raises(Exception) as failed:
        ProfileLedger(env=database.eventsourcing_env(pool_size=2, create=True))
    assert is_database_unavailable(failed.value), failed.value
    left = [thread.name for thread in threading.enumerate() if thread not in before and thread.is_alive()]
    assert left == []  # before: the pool's threads, until a collection closed it from one of them
