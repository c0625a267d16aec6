"""Least privilege on the log (issue 10, findings 5, 6, 9 and the SSE ones), through plain HTTP clients.

* The events of API tokens (names, roles, ids, salts, digests) are shown to admins only: not in pages, not
  through a type filter, not in the live stream.
* A revoked token's open event stream ends within about two seconds.
* A page of events is capped in bytes as well as rows, and its cursor goes on so that nothing is lost.
* A NUL in a stream filter is a 422; the number of open streams is bounded (503 with Retry-After beyond).
"""

from __future__ import annotations

import contextlib
import socket
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
        admin = {**bearer(tokens["admin"]), "X-Reason": "rotation for bob"}
        issued = http.post("/api/tokens", json={"name": "bob", "role": "editor"},
                           headers={**admin, "Idempotency-Key": "issue-bob"})
        revoked = http.delete(f"/api/tokens/{issued.json()['id']}", headers={**admin, "Idempotency-Key": "revoke-bob"})
        assert issued.status_code == 201 and revoked.status_code == 200, (issued.text, revoked.text)
        created = http.post("/api/profiles", json={"name": "calm"}, headers=bearer(tokens["editor"]))
        assert created.status_code == 201
        minimum = {"min_position": str(created.json()["position"])}
        admin_view = all_events(http, tokens["admin"], **minimum)
        assert {e["type"] for e in admin_view} >= {"AccessTokens.Issued", "Profile.Created", "IdempotencyKey.Used"}
        assert any("digest" in e["data"] for e in admin_view)
        for role in ("reader", "editor"):
            seen = all_events(http, tokens[role], **minimum)
            assert [e for e in seen if e["aggregate_type"] == "AccessTokens"] == []
            assert not any(secret in str(e["data"]) for e in seen for secret in SECRETS)
            # nor the claims of the idempotency keys the token commands carried (a token's id, the admin's reason)
            assert not [e for e in seen if "/api/tokens" in str(e["data"]) or e["reason"] == "rotation for bob"]
            assert not [e for e in all_events(http, tokens[role], type="IdempotencyKey.Used", **minimum)
                        if "/api/tokens" in str(e["data"])]
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


def console_cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"ledger_console_token={token}"}


# The live tail of the log as the API serves it, and as the console's timeline does (signed in by cookie).
STREAMS = [("/api/events/stream", bearer), ("/events/stream", console_cookie)]


def test_the_consoles_timeline_shows_token_events_to_admins_only(secured_server):
    running, tokens = secured_server
    with httpx.Client(base_url=running.base_url, timeout=10) as http:
        http.post("/api/tokens", json={"name": "late", "role": "reader"},
                  headers={**bearer(tokens["admin"]), "Idempotency-Key": "issue-late"})
        def timeline(token: str, **query: str) -> str:  # the rows of the page, not its filter form
            page = http.get("/events", params=query, headers=console_cookie(token))
            assert page.status_code == 200
            return page.text.split('id="timeline"', 1)[1].split("</ol>", 1)[0]

        assert "AccessTokens.Issued" in timeline(tokens["admin"])
        for role in ("reader", "editor"):
            assert "AccessTokens." not in timeline(tokens[role]) + timeline(tokens[role], type="AccessTokens.Issued")
            assert "/api/tokens" not in timeline(tokens[role]) + timeline(tokens[role], type="IdempotencyKey.Used")


@pytest.mark.parametrize(("path", "credentials"), STREAMS)
def test_a_readers_stream_never_carries_token_events(secured_server, path, credentials):
    running, tokens = secured_server
    with httpx.Client(base_url=running.base_url, timeout=10) as http:
        with http.stream("GET", path, params={"after": 0}, headers=credentials(tokens["reader"])) as stream:
            assert stream.status_code == 200
            http.post("/api/tokens", json={"name": "late", "role": "reader"},
                      headers={**bearer(tokens["admin"]), "Idempotency-Key": "issue-late"})
            last = http.post("/api/profiles", json={"name": "marker"}, headers=bearer(tokens["editor"])).json()
            seen = []
            for frame in _frames(stream, time.monotonic() + 15):
                if "id" in frame:
                    seen.append(frame)
                    if int(frame["id"]) >= last["position"]:
                        break
        assert seen and all("AccessTokens." not in frame["event"] + frame["data"] for frame in seen)
        assert not any("/api/tokens" in frame["data"] for frame in seen)
        assert not any(secret in frame["data"] for frame in seen for secret in SECRETS)


@pytest.mark.parametrize(("path", "credentials"), STREAMS)
def test_revoking_a_token_closes_its_open_streams_within_two_seconds(secured_server, path, credentials):
    running, tokens = secured_server
    ledger = running.server.runtime.ledger
    record, token = TokenService(ledger).issue("watcher", "reader")
    ended = threading.Event()
    opened = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=running.base_url, timeout=30) as http:
            with http.stream("GET", path, headers=credentials(token)) as stream:
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


def client_at(running: RunningServer, address: str) -> httpx.Client:
    """A client of its own (open mode tells clients apart by address)."""
    return httpx.Client(base_url=running.base_url, timeout=10, transport=httpx.HTTPTransport(local_address=address))


def test_open_streams_are_bounded_the_consoles_included_and_one_client_holds_its_share_of_them(postgres_url):
    running = start_server(postgres_url)
    running.server.runtime.options.sse_max_streams = 4  # a client holds three at most
    try:
        with client_at(running, "127.0.0.1") as one, client_at(running, "127.0.0.2") as other, \
                client_at(running, "127.0.0.3") as third:
            with one.stream("GET", "/api/events/stream") as first, one.stream("GET", "/events/stream") as second, \
                    one.stream("GET", "/api/events/stream") as third_of_one:
                assert first.status_code == second.status_code == third_of_one.status_code == 200
                for path in ("/api/events/stream", "/events/stream"):  # its share: before, a client took them all
                    refused = one.get(path, timeout=5, headers={"Accept": "application/json"})
                    body = assert_error(refused, 429)
                    assert int(refused.headers["Retry-After"]) > 0 and "event streams" in body["detail"]
                with other.stream("GET", "/api/events/stream") as others:
                    assert others.status_code == 200  # another client's place was kept for it
                    for path in ("/api/events/stream", "/events/stream"):  # every place held: the server's bound
                        refused = third.get(path, timeout=5, headers={"Accept": "application/json"})
                        body = assert_error(refused, 503)
                        assert int(refused.headers["Retry-After"]) > 0 and "event streams" in body["detail"]
            deadline = time.monotonic() + 10  # closed streams give their places back
            while running.server.runtime.metrics.streams_open and time.monotonic() < deadline:
                time.sleep(0.05)
            with one.stream("GET", "/events/stream") as again:
                assert again.status_code == 200
    finally:
        running.stop()


def test_a_stream_whose_client_left_before_it_began_gives_its_place_back_at_once(postgres_url):
    running = start_server(postgres_url)
    running.server.runtime.options.sse_max_streams = 4  # a client holds three at most
    port = int(running.base_url.rsplit(":", 1)[1])
    try:
        for _ in range(30):  # a client that asks and leaves at once
            with socket.create_connection(("127.0.0.1", port)) as left:
                left.sendall(b"GET /api/events/stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
        with client_at(running, "127.0.0.1") as http, contextlib.ExitStack() as held:
            deadline = time.monotonic() + 10
            while running.server.runtime.metrics.streams_open and time.monotonic() < deadline:
                time.sleep(0.05)
            statuses = [held.enter_context(http.stream("GET", "/api/events/stream")).status_code for _ in range(3)]
            assert statuses == [200] * 3  # before: 429, its places held by streams never begun, until a GC ran
    finally:
        running.stop()


def test_a_reader_token_holds_its_share_of_the_event_streams_and_another_token_still_opens_one(secured_server):
    running, tokens = secured_server
    running.server.runtime.options.sse_max_streams = 8  # a client holds six at most
    with httpx.Client(base_url=running.base_url, timeout=10) as http, contextlib.ExitStack() as held:
        statuses = [held.enter_context(http.stream("GET", "/api/events/stream", headers=bearer(tokens["reader"])))
                    .status_code for _ in range(8)]
        assert statuses == [200] * 6 + [429] * 2  # before: [200] * 8, and every other client 503
        with http.stream("GET", "/api/events/stream", headers=bearer(tokens["editor"])) as another:
            assert another.status_code == 200


def test_a_burst_of_streams_opened_at_once_does_not_overshoot_the_bound(postgres_url):
    running = start_server(postgres_url)
    running.server.runtime.options.sse_max_streams = 5
    release = threading.Event()
    statuses: list[int] = []

    def open_one(address: str) -> None:
        with client_at(running, address) as http:
            with http.stream("GET", "/api/events/stream") as stream:
                statuses.append(stream.status_code)
                release.wait(30)

    try:
        openers = [threading.Thread(target=open_one, args=(f"127.0.0.{2 + n}",), daemon=True) for n in range(20)]
        for opener in openers:
            opener.start()
        deadline = time.monotonic() + 20
        while len(statuses) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(statuses) == [200] * 5 + [503] * 15
        release.set()
        for opener in openers:
            opener.join(30)
    finally:
        release.set()
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
