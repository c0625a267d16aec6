"""64 concurrent activations through HTTP: exactly one profile ends active, and the read side agrees."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.api.conftest import RunningServer

THREADS = 64
PROFILES = 8


@pytest.mark.postgres
def test_concurrent_activations_leave_exactly_one_active_profile(live_server: RunningServer):
    base = live_server.base_url
    with httpx.Client(base_url=base, timeout=30) as http:
        ids = [http.post("/api/profiles", json={"name": f"c-{n}", "steering": {"1": n}}).json()["id"] for n in range(PROFILES)]
    barrier = threading.Barrier(THREADS)
    results: list[httpx.Response | BaseException] = [None] * THREADS  # type: ignore[list-item]

    def activate(number: int) -> None:
        try:
            with httpx.Client(base_url=base, timeout=60) as http:
                barrier.wait(timeout=30)
                results[number] = http.post(
                    f"/api/profiles/{ids[number % PROFILES]}/activate", headers={"X-Actor": f"t{number}"}
                )
        except BaseException as error:  # noqa: BLE001 - reported below
            results[number] = error

    threads = [threading.Thread(target=activate, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    failures = [r if isinstance(r, BaseException) else r.text for r in results if not isinstance(r, httpx.Response) or r.status_code != 200]
    assert not failures, failures[:3]
    top = max(r.json()["position"] for r in results)  # type: ignore[union-attr]
    with httpx.Client(base_url=base, timeout=30) as http:
        active = http.get("/api/profiles/active", params={"min_position": top})
        assert active.status_code == 200, active.text
        listing = http.get("/api/profiles", params={"min_position": top, "limit": 100}).json()
    slot = live_server.server.runtime.ledger.active_slot()
    assert slot is not None and str(slot.profile_id) == active.json()["id"] == listing["active_profile_id"]
    assert [p["id"] for p in listing["profiles"] if p["is_active"]] == [active.json()["id"]]
    ledger = live_server.server.runtime.ledger
    assert [str(i) for i in ids if ledger.get_profile(i).is_active] == [active.json()["id"]]
