"""Read-your-writes: a query given a command's position sees that command; when it cannot in time, 504."""

from __future__ import annotations

import threading

import httpx

from tests.api.conftest import assert_error, start_server


def test_a_query_with_the_position_of_a_write_always_sees_it(client):
    for number in range(50):
        created = client.post("/api/profiles", json={"name": f"ryw-{number}", "steering": {"1": 1.0}})
        position = created.json()["position"]
        assert created.headers["X-Ledger-Position"] == str(position)
        profile_id = created.json()["id"]
        got = client.get(f"/api/profiles/{profile_id}", params={"min_position": position})
        assert got.status_code == 200, got.text
        updated = client.put(f"/api/profiles/{profile_id}", json={"steering": {"1": float(number + 2)}})
        header = {"X-Min-Position": updated.headers["X-Ledger-Position"]}
        seen = client.get(f"/api/profiles/{profile_id}/versions/2", headers=header)
        assert seen.status_code == 200 and seen.json()["steering"] == {"1": float(number + 2)}
        listing = client.get("/api/profiles", params={"search": f"ryw-{number}", "min_position": position}).json()
        assert profile_id in [p["id"] for p in listing["profiles"]]


def test_a_position_the_read_side_does_not_reach_is_a_504(client_factory):
    with client_factory(run_projections=False, inline_projections=False, consistency_timeout=0.2) as client:
        created = client.post("/api/profiles", json={"name": "unseen"}).json()
        body = assert_error(
            client.get("/api/profiles", params={"min_position": created["position"]}), 504, "projection_timeout"
        )
        assert str(created["position"]) in body["detail"] and body["min_position"] == created["position"]
        beyond = client.get("/api/profiles", headers={"X-Min-Position": "999999"})
        assert assert_error(beyond, 422, "invalid_request")["field"] == "min_position"  # never recorded: not a wait
        assert client.get("/api/profiles").status_code == 200  # without a position: answers at once
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "not_ready"


def test_an_answer_composed_of_several_reads_shows_one_moment_while_activations_race(database_url):
    """A page of profiles flags as active the profile its ``active_profile_id`` names, and the active view shows an
    active profile, however activations of two profiles interleave with the reads."""
    running = start_server(database_url)
    torn: list[str] = []
    try:
        with httpx.Client(base_url=running.base_url, timeout=30) as client:
            ids = [client.post("/api/profiles", json={"name": f"torn-{n}", "steering": {"1": 1.0}}).json()["id"]
                   for n in range(2)]

            def flip(profile_id: str) -> None:
                with httpx.Client(base_url=running.base_url, timeout=30) as writer:
                    for _ in range(40):
                        assert writer.post(f"/api/profiles/{profile_id}/activate").status_code == 200

            def read() -> None:
                with httpx.Client(base_url=running.base_url, timeout=30) as reader:
                    for _ in range(60):
                        page = reader.get("/api/profiles", params={"search": "torn"}).json()
                        flagged = [p["id"] for p in page["profiles"] if p["is_active"]]
                        if flagged != [page["active_profile_id"]] and page["active_profile_id"] is not None:
                            torn.append(f"listed {flagged}, active {page['active_profile_id']}")
                        active = reader.get("/api/profiles/active")
                        if active.status_code == 200 and not active.json()["is_active"]:
                            torn.append(f"the active view shows {active.json()['name']} not active")

            threads = [threading.Thread(target=flip, args=(pid,)) for pid in ids]
            threads += [threading.Thread(target=read) for _ in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
    finally:
        running.stop()
    assert torn == [], f"{len(torn)} torn answers, such as {torn[:3]}"
