"""Read-your-writes for every client: once a command is answered, every query on every server of the database
shows it, with no position passed; a bulk writer can opt out with ``Prefer: respond-async``."""

from __future__ import annotations

import time

from tests.api.conftest import make_client
from tests.read_your_writes import run_commands_and_read_back


def test_every_command_is_visible_at_once_on_every_server_without_a_position(database_url):
    with make_client(database_url) as first, make_client(database_url) as second:
        commands, misses = run_commands_and_read_back(first, [first, second])
    assert commands == 200
    assert misses.reads == 500 and misses.missed == []


def test_a_command_waits_for_the_read_side_at_most_the_bound_and_says_so(sqlite_url):
    with make_client(sqlite_url, run_projections=False, inline_projections=False, consistency_timeout=0.3) as client:
        started = time.monotonic()
        created = client.post("/api/profiles", json={"name": "unprojected"})
        assert created.status_code == 201 and time.monotonic() - started >= 0.3
        assert created.headers["X-Ledger-Read-Side"] == "pending"  # nothing projects here: not visible yet
        assert client.get(f"/api/profiles/{created.json()['id']}").status_code == 404


def test_a_bulk_writer_that_prefers_respond_async_is_answered_at_once(sqlite_url):
    with make_client(sqlite_url, run_projections=False, inline_projections=False, consistency_timeout=30) as client:
        started = time.monotonic()
        created = client.post("/api/profiles", json={"name": "bulk"}, headers={"Prefer": "respond-async, wait=1"})
        assert created.status_code == 201 and time.monotonic() - started < 10
        assert created.headers["Preference-Applied"] == "respond-async"
        assert created.headers["X-Ledger-Read-Side"] == "pending"
        assert created.headers["X-Ledger-Position"] == str(created.json()["position"])


def test_the_read_models_are_written_with_the_events_so_no_worker_is_waited_for(database_url):
    with make_client(database_url, run_projections=False, consistency_timeout=30) as client:
        started = time.monotonic()
        created = client.post("/api/profiles", json={"name": "inline", "steering": {"5": 1.0}})
        revised = client.put(f"/api/profiles/{created.json()['id']}", json={"steering": {"5": 2.0}})
        assert created.status_code == 201 and revised.status_code == 200 and time.monotonic() - started < 10
        assert "X-Ledger-Read-Side" not in created.headers and "X-Ledger-Read-Side" not in revised.headers
        assert client.get(f"/api/profiles/{created.json()['id']}").json()["steering"] == {"5": 2.0}
        versions = client.get(f"/api/profiles/{created.json()['id']}/versions").json()["versions"]
        assert [version["version"] for version in versions] == [1, 2]


def test_the_active_profile_another_server_changed_shows_at_once_where_it_was_cached(database_url):
    """The active profile is served from memory: a change committed through another server must show on the next
    read all the same, however soon it comes."""
    with make_client(database_url) as first, make_client(database_url) as second:
        profile = first.post("/api/profiles", json={"name": "switched"}).json()
        stale = []
        for round_ in range(40):
            assert second.post(f"/api/profiles/{profile['id']}/activate").status_code == 200
            if first.get("/api/profiles/active").status_code != 200:  # cached here now
                stale.append((round_, "activation"))
            assert second.post("/api/profiles/deactivate").status_code == 200
            if first.get("/api/profiles/active").status_code != 404:
                stale.append((round_, "deactivation"))
    assert stale == []
