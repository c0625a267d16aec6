"""Least privilege on the log (issue 10, findings 5, 6, 9 and the SSE ones), through plain HTTP clients.

* The events of API tokens (names, roles, ids, salts, digests) are shown to admins only: not in pages, not
  through a type filter, not in the live stream.
* A revoked token's open event stream ends within about two seconds.
* A page of events is capped in bytes as well as rows, and its cursor goes on so that nothing is lost.
* A NUL in a stream filter is a 422; the number of open streams is bounded (503 with Retry-After beyond).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from ledger.access import ROLES
from ledger.api.auth import TOKEN_MAX_AGE
from ledger.tokens import TokenService
from tests.api.conftest import RunningServer, assert_error, make_client, start_server

pytestmark = pytest.mark.postgres

SECRETS = ("salt", "digest")


@pytest.fixture
def secured_server(postgres_url: str) -> Iterator[tuple[RunningServer, dict[str, str]]]:
    """A real uvicorn server with authentication on, and one token per role."""
    running = start_server(postgres_url, auth=True, sse_heartbeat=0.2)
    ledger = running.server.runtime.ledger
    tokens = {role: TokenService(ledger).issue(f"{role}-bot", role)[1] for role in ROLES}
    try:
        yield running, tokens
    finally:
        running.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def all_events(http: httpx.Client, token: str, **params: str) -> list[dict]:
    events, cursor = [], None
    while True:
        query = {**params, "limit": "1000", **({"cursor": cursor} if cursor else {})}
        page = http.get("/api/events", params=query, headers=bearer(token))
        assert page.status_code == 200, page.text
        body = page.json()
        events += body["events"]
        cursor = body["next_cursor"]
        if cursor is None:
            return events


def test_token_events_are_shown_to_admins_only(secured_server):
    running, tokens = secured_server
    with httpx.Client(base_url=running.base_url, timeout=10) as http:
        created = http.post("/api/profiles", json={"name": "calm"}, headers=bearer(tokens["editor"]))
        assert created.status_code == 201
        minimum = {"min_position": str(created.json()["position"])}
        admin_view = all_events(http, tokens["admin"], **minimum)
        assert {e["type"] for e in admin_view} >= {"AccessTokens.Issued", "Profile.Created"}
        assert any("digest" in e["data"] for e in admin_view)
        for role in ("reader", "editor"):
            seen = all_events(http, tokens[role], **minimum)
            assert [e for e in seen if e["aggregate_type"] == "AccessTokens"] == []
            assert not any(secret in str(e["data"]) for e in seen for secret in SECRETS)
            assert "Profile.Created" in {e["type"] for e in seen}
            for kind in ("AccessTokens.Issued", "AccessTokens.Opened", "AccessTokens.Revoked"):
                assert all_events(http, tokens[role], type=kind, **minimum) == []
        assert all_events(http, tokens["admin"], type="AccessTokens.Issued", **minimum)


def _frames(response: httpx.Response, until: float) -> Iterator[dict[str, str]]:
    frame: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            frame = {"comment": line[1:].strip()}
        else:
            key, _, value = line.partition(": ")
            frame[key] = value
        if time.monotonic() > until:
            return


def test_a_readers_stream_never_carries_token_events(secured_server):
    running, tokens = secured_server
    with httpx.Client(base_url=running.base_url, timeout=10) as http:
        with http.stream("GET", "/api/events/stream", params={"after": 0}, headers=bearer(tokens["reader"])) as stream:
            assert stream.status_code == 200
            http.post("/api/tokens", json={"name": "late", "role": "reader"}, headers=bearer(tokens["admin"]))
            last = http.post("/api/profiles", json={"name": "marker"}, headers=bearer(tokens["editor"])).json()
            seen = []
            for frame in _frames(stream, time.monotonic() + 15):
                if "id" in frame:
                    seen.append(frame)
                    if int(frame["id"]) >= last["position"]:
                        break
        assert seen and all(not frame["event"].startswith("AccessTokens.") for frame in seen)
        assert not any(secret in frame["data"] for frame in seen for secret in SECRETS)


def test_revoking_a_token_closes_its_open_streams_within_two_seconds(secured_server):
    running, tokens = secured_server
    ledger = running.server.runtime.ledger
    record, token = TokenService(ledger).issue("watcher", "reader")
    ended = threading.Event()
    opened = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=running.base_url, timeout=30) as http:
            with http.stream("GET", "/api/events/stream", headers=bearer(token)) as stream:
                assert stream.status_code == 200
                opened.set()
                for _ in stream.iter_lines():
                    pass
        ended.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert opened.wait(10)
    time.sleep(TOKEN_MAX_AGE)
    TokenService(ledger).revoke(record.token_id)  # as the CLI or another server would: this server learns of it by reloading
    revoked_at = time.monotonic()
    assert ended.wait(10), "the revoked token's stream stayed open"
    assert time.monotonic() - revoked_at < 2.5
    with httpx.Client(base_url=running.base_url, timeout=10) as http:
        assert_error(http.get("/api/events/stream", headers=bearer(token)), 401, "unauthenticated")


def test_an_expired_tokens_stream_ends_and_the_token_is_refused(secured_server):
    running, tokens = secured_server
    with httpx.Client(base_url=running.base_url, timeout=10) as http:
        issued = http.post(
            "/api/tokens", json={"name": "brief", "role": "reader", "expires_in": 2}, headers=bearer(tokens["admin"])
        )
        assert issued.status_code == 201, issued.text
        assert issued.json()["expires_at"]
        token = issued.json()["token"]
        started = time.monotonic()
        with http.stream("GET", "/api/events/stream", headers=bearer(token)) as stream:
            assert stream.status_code == 200
            for _ in stream.iter_lines():
                pass
        assert time.monotonic() - started < 6
        refused = assert_error(http.get("/api/profiles", headers=bearer(token)), 401, "unauthenticated")
        assert "expired" in refused["detail"]


def test_a_nul_in_a_stream_filter_is_refused(secured_server):
    running, tokens = secured_server
    with httpx.Client(base_url=running.base_url, timeout=10) as http:
        for params in ({"actor": "a\x00b"}, {"type": "Profile.\x00"}):
            assert_error(http.get("/api/events/stream", params=params, headers=bearer(tokens["reader"])), 422)
            assert_error(http.get("/api/events", params=params, headers=bearer(tokens["reader"])), 422)


def test_open_streams_are_bounded(postgres_url):
    running = start_server(postgres_url)
    running.server.runtime.options.sse_max_streams = 2
    try:
        with httpx.Client(base_url=running.base_url, timeout=10) as http:
            with http.stream("GET", "/api/events/stream") as first, http.stream("GET", "/api/events/stream") as second:
                assert first.status_code == second.status_code == 200
                metrics = running.server.runtime.metrics
                deadline = time.monotonic() + 10
                while metrics.streams_open < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
                refused = http.get("/api/events/stream", timeout=5)
                body = assert_error(refused, 503)
                assert int(refused.headers["Retry-After"]) > 0 and "event streams" in body["detail"]
    finally:
        running.stop()


def test_a_page_is_capped_in_bytes_and_its_cursor_loses_nothing(postgres_url):
    with make_client(postgres_url) as client:
        budget = client.app.state.runtime.options.page_bytes
        big = "x" * 40_000
        for number in range(60):
            last = client.post("/api/profiles", json={"name": f"big-{number}", "metadata": {"blob": big}})
            assert last.status_code == 201
        position = last.json()["position"]
        page = client.get("/api/events", params={"limit": 1000, "min_position": position})
        assert page.status_code == 200
        assert len(page.content) <= budget + 1024
        assert page.json()["next_cursor"] is not None
        positions, cursor = [], None
        while True:
            body = client.get("/api/events", params={"limit": 1000, **({"cursor": cursor} if cursor else {})}).json()
            positions += [event["position"] for event in body["events"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert positions == list(range(1, position + 1))


def test_one_event_larger_than_the_budget_still_makes_progress(postgres_url):
    with make_client(postgres_url) as client:
        client.app.state.runtime.options.page_bytes = 1_000
        for number in range(3):
            last = client.post("/api/profiles", json={"name": f"n-{number}", "metadata": {"blob": "y" * 5_000}})
        position = last.json()["position"]
        positions, cursor = [], None
        while True:
            query = {"min_position": position, **({"cursor": cursor} if cursor else {})}
            body = client.get("/api/events", params=query).json()
            assert body["events"], "a page must hold at least one event"
            positions += [event["position"] for event in body["events"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert positions == list(range(1, position + 1))
