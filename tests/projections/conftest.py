"""Fixtures for the read-model specifications: a ledger, its read models, and a way to bring them up to date."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from ledger.application import ProfileLedger
from ledger.settings import Database
from projections.queries import ReadModel
from projections.runner import ProjectionWorker


@pytest.fixture
def database(database_url: str) -> Database:
    return Database(database_url)


@pytest.fixture
def ledger(database: Database) -> Iterator[ProfileLedger]:
    app = ProfileLedger(env=database.eventsourcing_env(pool_size=2))
    yield app
    app.close()


@pytest.fixture
def worker(database: Database, ledger: ProfileLedger) -> Iterator[ProjectionWorker]:
    projection_worker = ProjectionWorker(database)
    yield projection_worker
    projection_worker.close()


@pytest.fixture
def read_model(database: Database, worker: ProjectionWorker) -> Iterator[ReadModel]:
    model = ReadModel(database)
    yield model
    model.close()


@pytest.fixture
def project(worker: ProjectionWorker) -> Callable[[], int]:
    """Apply everything recorded so far to the read models; returns the position reached."""
    return worker.catch_up
