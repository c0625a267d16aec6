"""64 concurrent activations through HTTP: exactly one profile ends active, and the read side agrees."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.api.conftest import RunningServer, assert_error, start_server

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


RECORDERS = 8
ROUNDS = 3


def test_no_execution_is_recorded_after_its_profile_is_deleted(database_url: str):
    """Executions recorded while their profile is deleted with ``delete_executions``: each one either came before the
    delete (201, and the delete removed it) or is refused (404 ``profile_not_found``); none slips in after it."""
    running = start_server(database_url)
    try:
        for round_number in range(ROUNDS):
            with httpx.Client(base_url=running.base_url, timeout=60) as http:
                profile_id = http.post("/api/profiles", json={"name": f"doomed-{round_number}"}).json()["id"]
            recorded: list[httpx.Response] = []
            deletions: list[httpx.Response] = []
            barrier = threading.Barrier(RECORDERS + 1)

            def record(number: int) -> None:
                with httpx.Client(base_url=running.base_url, timeout=60) as http:
                    barrier.wait(timeout=30)
                    for attempt in range(200):  # until the delete refuses it
                        response = http.post(f"/api/profiles/{profile_id}/executions",
                                             json={"run_id": f"r{round_number}-{number}-{attempt}"})
                        recorded.append(response)
                        if response.status_code != 201:
                            return

            def delete() -> None:
                with httpx.Client(base_url=running.base_url, timeout=60) as http:
                    barrier.wait(timeout=30)
                    time.sleep(0.05)
                    deletions.append(http.delete(f"/api/profiles/{profile_id}", params={"delete_executions": "true"}))

            threads = [threading.Thread(target=record, args=(n,)) for n in range(RECORDERS)]
            threads.append(threading.Thread(target=delete))
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            assert [response.status_code for response in deletions] == [200], [r.text for r in deletions]
            refused = [response for response in recorded if response.status_code != 201]
            assert len(refused) == RECORDERS
            for response in refused:
                assert_error(response, 404, "profile_not_found")
            with httpx.Client(base_url=running.base_url, timeout=60) as http:
                left = http.get(f"/api/profiles/{profile_id}/executions", params={"limit": 500}).json()["executions"]
                assert left == [], f"{len(left)} executions recorded after the delete"
                for response in recorded:
                    if response.status_code == 201:
                        assert_error(http.get(f"/api/executions/{response.json()['id']}"), 404, "execution_not_found")
    finally:
        running.stop()
