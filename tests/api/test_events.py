"""The audit log: filtered pages, and the live Server-Sent Events tail (through a real uvicorn server)."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from tests.api.conftest import assert_error, create, forged, fresh, start_server
from tests.waiting import wait_until


def test_events_are_filtered_and_paginated(client):
    first = create(client, "ev-a")
    client.put(f"/api/profiles/{first['id']}", json={"description": "x"}, headers={"X-Actor": "carol"})
    last = create(client, "ev-b")
    query = fresh(client, last["position"])
    everything = client.get("/api/events", params=query).json()["events"]
    positions = [event["position"] for event in everything]
    assert positions == sorted(positions) and len(positions) >= 3
    mine = client.get("/api/events", params={"profile_id": first["id"]}).json()["events"]
    assert [e["type"] for e in mine if e["aggregate_type"] == "Profile"] == ["Profile.Created", "Profile.DetailsRevised"]
    assert {e["profile_id"] for e in mine} == {first["id"]}
    assert client.get("/api/events", params={"profile_id": "EV-A"}).json()["events"] == mine  # or by its name
    assert [e["type"] for e in client.get("/api/events", params={"actor": "carol"}).json()["events"]] == [
        "Profile.DetailsRevised"
    ]
    created = client.get("/api/events", params={"type": "Profile.Created"}).json()["events"]
    assert {e["profile_id"] for e in created} == {first["id"], last["id"]}
    after = client.get("/api/events", params={"after": positions[0]}).json()["events"]
    assert after[0]["position"] > positions[0]
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert client.get("/api/events", params={"since": future}).json()["events"] == []
    assert len(client.get("/api/events", params={"until": future}).json()["events"]) == len(everything)
    page = client.get("/api/events", params={"limit": 1}).json()
    assert len(page["events"]) == 1 and page["next_cursor"]
    second = client.get("/api/events", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert second["events"][0]["position"] > page["events"][0]["position"]
    assert_error(client.get("/api/events", params={"cursor": "x"}), 422, "invalid_cursor")
    assert_error(client.get("/api/events/stream", params={"after": "soon"}), 422)
    assert_error(client.get("/api/events/stream", headers={"Last-Event-ID": "abc"}), 422)


def test_a_time_or_cursor_beyond_what_any_column_holds_is_a_422_not_a_500(client):
    made = create(client, "calm")
    client.put(f"/api/profiles/{made['id']}", json={"steering": {"1": 2.0}})
    create(client, "sea")
    for bound in ({"until": "0001-01-01T00:00:00+01:00"}, {"since": "9999-12-31T23:59:59-01:00"}):
        assert assert_error(client.get("/api/events", params=bound), 422, "invalid_request")["field"] in bound

    events = client.get("/api/events", params={"limit": 1}).json()["next_cursor"]
    assert_error(client.get("/api/events", params={"limit": 1, "cursor": forged(events, [10**23])}), 422,
                 "invalid_cursor")
    versions = f"/api/profiles/{made['id']}/versions"
    issued = client.get(versions, params={"limit": 1}).json()["next_cursor"]
    assert_error(client.get(versions, params={"cursor": forged(issued, [10**23])}), 422, "invalid_cursor")
    issued = client.get("/api/profiles", params={"sort": "updated", "limit": 1}).json()["next_cursor"]
    for moment in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-10:00"):  # past years 1 to 9999 in UTC
        edited = forged(issued, [moment, made["id"]])
        assert_error(client.get("/api/profiles", params={"sort": "updated", "cursor": edited}), 422, "invalid_cursor")


def _read_events(lines, count: int, seen: list[dict], timeout: float = 15.0) -> None:
    """Parse SSE frames from ``lines`` (keep the iterator: dropping it closes the stream) until ``count`` events."""
    deadline = time.monotonic() + timeout
    frame: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "id" in frame and "data" in frame:
                seen.append({"id": int(frame["id"]), "event": frame.get("event"), "data": json.loads(frame["data"])})
            frame = {}
            if len(seen) >= count or time.monotonic() > deadline:
                return
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(": ")
        frame[key] = value


def _open_streams(base_url: str) -> int:
    text = httpx.get(f"{base_url}/metrics").text
    line = next(line for line in text.splitlines() if line.startswith("ledger_sse_streams_open "))
    return int(float(line.split()[1]))




def test_a_stream_shows_a_write_as_soon_as_it_is_answered_on_its_own_server_or_another(database_url):
    """A stream looks again as the read models move on (a write of its server; on PostgreSQL, another server's
    notification), not at its next poll: here a poll every 60 s, which the events must not wait for."""
    streaming, writing = start_server(database_url, sse_poll=60.0), start_server(database_url, sse_poll=60.0)
    try:
        with httpx.Client(base_url=streaming.base_url, timeout=30) as http, \
                http.stream("GET", "/api/events/stream", params={"after": 0}) as response:
            lines = response.iter_lines()
            assert next(lines) == ": connected"  # (the first look found nothing: the stream now waits)
            servers = [streaming] + ([writing] if database_url.startswith("postgresql") else [])
            seen: list[dict] = []
            for number, server in enumerate(servers):
                made = httpx.post(f"{server.base_url}/api/profiles", json={"name": f"woken-{number}"}, timeout=30)
                started = time.monotonic()
                while not any(event["data"].get("profile_id") == made.json()["id"] for event in seen):
                    _read_events(lines, len(seen) + 1, seen)  # (a line at a time: no wait for a deadline)
                assert time.monotonic() - started < 20, server  # before: at the 60 s poll (httpx gave up at 30)
    finally:
        writing.stop()
        streaming.stop()


@pytest.mark.postgres
def test_stream_tails_the_log_resumes_and_ends_when_the_client_goes(live_server):
    base = live_server.base_url
    with httpx.Client(base_url=base, timeout=10) as http:
        first = http.post("/api/profiles", json={"name": "s-0"}).json()
        seen: list[dict] = []
        with http.stream("GET", "/api/events/stream", params={"after": 0}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")

            def write() -> None:
                with httpx.Client(base_url=base, timeout=10) as writer_http:
                    for number in range(1, 4):
                        writer_http.post("/api/profiles", json={"name": f"s-{number}"})

            writer = threading.Thread(target=write)
            writer.start()
            lines = response.iter_lines()
            _read_events(lines, 4 * 3, seen)  # each create appends the profile's and the name index's events
            writer.join()
            assert _open_streams(base) == 1
        ids = [event["id"] for event in seen]
        assert ids == sorted(ids) and ids[0] == 1 and len(set(ids)) == len(ids)
        assert all(event["data"]["position"] == event["id"] for event in seen)
        assert seen[0]["data"]["profile_id"] == first["id"] and seen[0]["event"] == "Profile.Created"
        wait_until(lambda: _open_streams(base) == 0, what="the stream to end after the client left")
        # resume after a given position with Last-Event-ID
        resumed: list[dict] = []
        with http.stream("GET", "/api/events/stream", headers={"Last-Event-ID": str(ids[4])}) as response:
            _read_events(response.iter_lines(), 1, resumed)
        assert resumed[0]["id"] == ids[5]


@pytest.mark.postgres
def test_stream_ends_cleanly_when_the_server_shuts_down(postgres_url):
    running = start_server(postgres_url)
    ended = threading.Event()
    lines: list[str] = []

    def listen() -> None:
        with httpx.Client(base_url=running.base_url, timeout=30) as http:
            with http.stream("GET", "/api/events/stream") as response:
                for line in response.iter_lines():
                    lines.append(line)
        ended.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    wait_until(lambda: bool(lines), what="the stream to start")
    started = time.monotonic()
    running.stop(timeout=15)
    assert ended.wait(5), "the client's stream did not end"
    assert time.monotonic() - started < 8, "shutdown waited for the stream"


def test_ids_and_times_in_an_event_read_as_everywhere_else_in_the_api(client):
    made = create(client, "ev-restored")
    assert client.delete(f"/api/profiles/{made['id']}").status_code == 200
    restored = client.post(f"/api/profiles/{made['id']}/restore").json()
    (event,) = client.get("/api/events", params={"profile_id": made["id"], "type": "Profile.Restored"}).json()["events"]
    assert event["data"]["created_at"] == restored["created_at"] == made["created_at"]  # UTC as Z
    execution = client.post(f"/api/profiles/{made['id']}/executions", json={"seed": 3}).json()
    (recorded,) = client.get("/api/events", params={"type": "Execution.Recorded", "profile_id": made["id"]}).json()[
        "events"
    ]
    assert recorded["data"]["profile_id"] == execution["profile_id"] == made["id"]


def test_an_empty_or_padded_filter_reads_as_the_profile_list_reads_one(client):
    made = client.post("/api/profiles", json={"name": "filtered"}, headers={"X-Actor": "rev"}).json()
    query = fresh(client, made["position"])
    everything = client.get("/api/events", params=query).json()["events"]
    for empty in ({"type": ""}, {"actor": ""}, {"actor": "   "}, {"profile_id": ""}, {"since": " "}):  # none, 404, 422
        assert client.get("/api/events", params={**query, **empty}).json()["events"] == everything, empty
    by_rev = client.get("/api/events", params={**query, "actor": " rev "}).json()["events"]  # as stored: trimmed
    assert by_rev and {event["actor"] for event in by_rev} == {"rev"}


def test_a_type_the_log_cannot_hold_is_refused_and_every_type_it_holds_is_offered(client):
    profile = create(client, "typed")
    url = f"/api/profiles/{profile['id']}"
    client.put(url, json={"steering": {"2": 1.0}}, headers={"Idempotency-Key": "typed-1"})
    client.put(url, json={"name": "typed-renamed", "bump_version": False})
    client.post(f"{url}/activate")
    client.post(f"{url}/executions", json={"seed": 1})
    client.post("/api/profiles/deactivate")
    client.delete(url)
    client.post(f"{url}/restore")
    client.post("/api/tokens", json={"name": "typed-token", "role": "reader"})
    seen = {event["type"] for event in client.get("/api/events", params={"limit": 1000}).json()["events"]}
    for wrong in ("profile.created", "Bogus.Type", "Profile.Created,Profile.Deleted", "ActiveSlot.Created"):
        refused = assert_error(client.get("/api/events", params={"type": wrong}), 422, "invalid_value")
        assert refused["field"] == "type", refused
        assert_error(client.get("/api/events/stream", params={"type": wrong}), 422, "invalid_value")
    offered = set(refused["detail"].split(": one of ")[1].split(", "))
    assert seen <= offered and len(seen) >= 15, sorted(offered - seen)
    console = client.get("/events").text
    assert {option for option in offered if f"<option>{option}</option>" in console} == offered
    assert "ActiveSlot.Created" not in console and "Execution.Created" not in console


def test_a_resume_point_past_the_logs_head_is_refused_not_silently_skipped(client):
    made = create(client, "resumed")
    head = made["position"]
    for params, headers, field in (({"after": str(head + 5)}, {}, "after"),
                                   ({}, {"Last-Event-ID": str(head + 5)}, "Last-Event-ID"),
                                   ({"after": "1"}, {"Last-Event-ID": str(head + 5)}, "Last-Event-ID")):
        refused = assert_error(client.get("/api/events/stream", params=params, headers=headers), 422, "invalid_value")
        assert refused["field"] == field and f"({head})" in refused["detail"], refused
    assert assert_error(client.get("/api/events", params={"after": head + 5}), 422)["field"] == "after"
    assert client.get("/api/events", params={"after": head}).json()["events"] == []  # at the head: nothing yet
    assert client.get("/events/stream", params={"after": str(head + 5)}).status_code == 422  # the console's tail
