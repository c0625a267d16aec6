from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledger.application import ProfileLedger
from ledger.settings import Database


@pytest.fixture
def ledger(database_url: str) -> Iterator[ProfileLedger]:
    """The application on SQLite and on PostgreSQL."""
    app = ProfileLedger(env=Database(database_url).eventsourcing_env(pool_size=40))
    yield app
    app.close()


@pytest.fixture
def pg_ledger(postgres_url: str) -> Iterator[ProfileLedger]:
    app = ProfileLedger(env=Database(postgres_url).eventsourcing_env(pool_size=40))
    yield app
    app.close()


def log_types(app: ProfileLedger) -> list[str]:
    """Every stored event's qualified type, in commit order."""
    return [n.topic.rsplit(":", 1)[-1] for n in app.recorder.select_notifications(start=1, limit=100_000)]
