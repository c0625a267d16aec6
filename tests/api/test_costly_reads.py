"""A read costs a bounded time: one costly query (a search no index can narrow, over the longest descriptions) is
stopped at the read timeout and answered 503 ``read_timeout``, and the connection it held serves the next read."""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import httpx

import projections.reading
from projections.errors import ReadShareError
from projections.shares import Shares, reader
from tests.api.conftest import assert_error, start_server

LONGEST_DESCRIPTION = "aab " + "a" * 9_996  # every trigram of the search below is in it: no index leaves a row out
COSTLY_SEARCH = "a" * 99 + "b"  # matches nothing, and costs about 10⁶ comparisons a row


def test_a_search_running_past_the_read_timeout_is_stopped_and_the_next_read_is_served(client, monkeypatch):
    for number in range(120):
        made = client.post("/api/profiles", json={"name": f"long {number}", "description": LONGEST_DESCRIPTION})
        assert made.status_code == 201
    monkeypatch.setattr(projections.reading, "READ_STATEMENT_TIMEOUT_SECONDS", 0.02)

    answer = client.get("/api/profiles", params={"search": COSTLY_SEARCH})
    stopped = assert_error(answer, 503, "read_timeout")
    assert "ran past 0.02 s and was stopped" in stopped["detail"] and answer.headers["Retry-After"] == "1"
    page = client.get("/", params={"search": COSTLY_SEARCH}, headers={"Accept": "text/html"})  # the console's
    assert page.status_code == 503 and "ran past 0.02 s and was stopped" in page.text, page.text[:300]
    assert client.get("/api/profiles/long 7").json()["description"] == LONGEST_DESCRIPTION  # the connection works

    monkeypatch.setattr(projections.reading, "READ_STATEMENT_TIMEOUT_SECONDS", 60.0)
    assert client.get("/api/profiles", params={"search": COSTLY_SEARCH}).json()["profiles"] == []


def test_a_client_holding_its_share_of_the_connections_is_refused_more_while_another_client_reads(
        database_url, monkeypatch):
    """One client's costly searches take three quarters of the connections the read models are queried over (3 of
    4 here): its next ones are refused 429 at once (with Retry-After) rather than queued, and another client's read
    is served at once."""
    monkeypatch.setattr(projections.reading, "READ_STATEMENT_TIMEOUT_SECONDS", 60.0)
    server = start_server(database_url)
    try:
        server.app.state.runtime.read_model.store.read_shares = Shares(4)
        one = httpx.Client(base_url=server.base_url, timeout=120)
        other = httpx.Client(base_url=server.base_url, timeout=120,
                             transport=httpx.HTTPTransport(local_address="127.0.0.2"))  # another client's address
        for number in range(300):
            one.post("/api/profiles", json={"name": f"long {number}", "description": LONGEST_DESCRIPTION})

        with ThreadPoolExecutor(8) as pool:
            searches = [pool.submit(one.get, "/api/profiles", params={"search": COSTLY_SEARCH}) for _ in range(8)]
            answered = as_completed(searches)
            refused = [next(answered).result() for _ in range(5)]  # the first answered, while three still run
            read = other.get("/api/profiles/long 7")
            answers = [search.result() for search in searches]
        assert read.status_code == 200 and read.json()["name"] == "long 7"
        assert sorted(answer.status_code for answer in answers) == [200] * 3 + [429] * 5
        assert all(answer.status_code == 429 and answer.json()["error"] == "too_many_requests"
                   and answer.headers["Retry-After"] == "1" for answer in refused)
    finally:
        server.stop()


def test_a_server_whose_connections_are_all_in_use_says_it_is_busy_not_that_its_database_is_away(client):
    client.post("/api/profiles", json={"name": "there"})
    datastore = client.app.state.runtime.ledger.recorder.datastore
    pool = datastore.pool
    postgres = hasattr(pool, "getconn")
    size = pool.get_stats()["pool_max"] if postgres else pool.pool_size + pool.max_overflow
    taken = [pool.getconn() if postgres else pool.get_connection() for _ in range(size)]  # (others' long queries)
    try:
        busy = assert_error(client.get("/api/profiles/there"), 503, "server_busy")
        assert busy["detail"] == "every database connection of this server is in use; retry shortly"
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["database"] is True, ready.text
        assert ready.json()["detail"] == "busy: every database connection of this server is in use"
    finally:
        for connection in taken:
            pool.putconn(connection) if postgres else pool.put_connection(connection)
    assert client.get("/api/profiles/there").status_code == 200  # before: 503 database_unavailable for a while


def test_an_event_stream_whose_client_holds_its_share_waits_for_it_and_goes_on(database_url):
    server = start_server(database_url)
    shares = server.app.state.runtime.read_model.store.read_shares = Shares(2)  # a client holds one at most
    held, release = threading.Event(), threading.Event()

    def another_read_of_the_same_client() -> None:  # (as a costly search of its own would hold it)
        reader.set("address 127.0.0.1")
        while not held.is_set():
            with contextlib.suppress(ReadShareError), shares.taken():  # (refused while the stream looks)
                held.set()
                release.wait(30)

    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as client, \
                client.stream("GET", "/api/events/stream") as stream:
            lines = stream.iter_lines()  # (held: an iterator let go closes the connection)
            assert next(lines) == ": connected"
            holder = threading.Thread(target=another_read_of_the_same_client)
            holder.start()
            assert held.wait(10)
            client.post("/api/profiles", json={"name": "written meanwhile"})  # the stream looks: refused its share
            time.sleep(1.0)
            release.set()
            holder.join()
            seen = next(line for line in lines if "written meanwhile" in line)  # before: the stream broke off
            assert seen.startswith("data: ")
    finally:
        release.set()
        server.stop()
