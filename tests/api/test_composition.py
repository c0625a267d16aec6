"""One composition root per server process: one ledger application and one connection pool serve the
commands, the queries, the projection worker and the log readers."""

from __future__ import annotations

import gc

import psycopg_pool
from eventsourcing.persistence import ConnectionPool

from ledger.application import ProfileLedger
from tests.api.conftest import make_client


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
