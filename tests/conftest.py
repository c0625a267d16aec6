"""Fixtures shared by every test: a real PostgreSQL server for the session, a fresh database per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.postgres_server import PostgresServer


@pytest.fixture(scope="session", autouse=True)
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One event-signing key for the session, given to every process the tests start (as a deployment would)."""
    import os

    from ledger.signing import create_private_key

    path = tmp_path_factory.mktemp("signing") / "signing-key.pem"
    create_private_key(path)
    previous = os.environ.get("LEDGER_SIGNING_KEY")
    os.environ["LEDGER_SIGNING_KEY"] = str(path)
    yield str(path)
    if previous is None:
        os.environ.pop("LEDGER_SIGNING_KEY", None)
    else:
        os.environ["LEDGER_SIGNING_KEY"] = previous


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A DSN to a new, empty PostgreSQL database, dropped after the test."""
    dbname = f"ledger_test_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(dbname)
    try:
        yield url
    finally:
        postgres_server.drop_database(dbname)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Run the test once on the embedded SQLite default and once on PostgreSQL (marked ``postgres``, so
    ``-m "not postgres"`` deselects that case)."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return request.getfixturevalue("sqlite_url")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that reaches the PostgreSQL server through its fixtures is marked ``postgres`` before ``-m``
    selects, so the database-free lane (``-m "not postgres"``) never starts one."""
    for item in items:
        if "postgres_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
