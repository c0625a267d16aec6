"""One composition root per server process: one ledger application and one connection pool serve the
commands, the queries, the projection worker and the log readers."""

from __future__ import annotations

import gc
import time

import psycopg
import psycopg_pool
import pytest
from eventsourcing.persistence import ConnectionPool

from ledger.application import ProfileLedger
from tests.api.conftest import make_client
from tests.waiting import wait_until


def _alive(kind: type | tuple[type, ...]) -> set[int]:
    gc.collect()
    return {id(thing) for thing in gc.get_objects() if issubclass(type(thing), kind)}


POOLS = (psycopg_pool.ConnectionPool, ConnectionPool)


def test_a_server_runs_one_application_and_one_pool(database_url):
    apps_before, pools_before = _alive(ProfileLedger), _alive(POOLS)
    with make_client(database_url) as client:
        created = client.post("/api/profiles", json={"name": "counted", "steering": {"1": 1.0}}).json()
        assert client.post(f"/api/profiles/{created['id']}/activate").status_code == 200
        assert client.get(f"/api/profiles/{created['id']}").status_code == 200  # the projection ran, too
        assert client.get("/api/profiles/active").status_code == 200
        apps, pools = _alive(ProfileLedger) - apps_before, _alive(POOLS) - pools_before
    assert len(apps) == 1, f"{len(apps)} ledger applications in one server"
    assert len(pools) == 1, f"{len(pools)} connection pools in one server"


@pytest.mark.postgres
def test_a_server_listens_on_one_connection_for_every_follower(postgres_url):
    def listening() -> int:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            return conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            ).fetchone()[0]

    with make_client(postgres_url) as client:  # the projection worker, the active-profile cache, read-your-writes
        assert client.post("/api/profiles", json={"name": "heard"}).status_code == 201
        wait_until(lambda: listening() >= 1, 10, "the listener to start")
        time.sleep(1)  # every follower has subscribed by now
        assert listening() == 1
