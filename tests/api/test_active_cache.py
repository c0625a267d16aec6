"""``GET /api/profiles/active`` is answered from memory (``ledger.api.active``): writes made elsewhere, by another
process on the same PostgreSQL database, must still show, at once with their position and soon without it."""

from __future__ import annotations


import httpx
import pytest

from ledger.application import ProfileLedger
from ledger.settings import Database
from tests.waiting import wait_until

pytestmark = pytest.mark.postgres


def _active_id(base_url: str) -> str | None:
    answer = httpx.get(f"{base_url}/api/profiles/active")
    return answer.json()["id"] if answer.status_code == 200 else None


def _eventually_active(base_url: str, expected: str | None, timeout: float = 5.0) -> None:
    wait_until(lambda: _active_id(base_url) == expected, timeout, f"the active profile to become {expected}")


def test_a_write_by_another_process_replaces_the_cached_active_profile(live_server, postgres_url):
    base = live_server.base_url
    live_server.server.runtime.active.max_age = 600.0  # only the notifications may invalidate it here
    first = httpx.post(f"{base}/api/profiles", json={"name": "first", "steering": {"1": 1.0}}).json()
    activated = httpx.post(f"{base}/api/profiles/{first['id']}/activate").json()
    read = httpx.get(f"{base}/api/profiles/active", params={"min_position": activated["position"]})
    assert read.status_code == 200 and read.json()["id"] == first["id"]
    for _ in range(20):  # served from memory now
        assert httpx.get(f"{base}/api/profiles/active").json()["id"] == first["id"]

    elsewhere = ProfileLedger(env=Database(postgres_url).eventsourcing_env(pool_size=1))
    try:
        second = elsewhere.create_profile({"name": "second", "steering": {"2": 1.0}}).profile
        assert second is not None
        position = elsewhere.activate_profile(second.id).position
        read = httpx.get(f"{base}/api/profiles/active", headers={"X-Min-Position": str(position)})
        assert read.status_code == 200 and read.json()["id"] == str(second.id)

        edited = elsewhere.update_profile(second.id, {"description": "edited elsewhere"})
        read = httpx.get(f"{base}/api/profiles/active", params={"min_position": edited.position})
        assert read.json()["description"] == "edited elsewhere" and read.json()["version"] == 2

        elsewhere.deactivate_profile()
        _eventually_active(base, None)  # no position given: the notification invalidates the cache
        elsewhere.activate_profile(second.id)
        _eventually_active(base, str(second.id))
    finally:
        elsewhere.close()
