"""With the database stopped, queries answer 503 ``database_unavailable`` (never 422 or 500), with or without a
position to wait for; once it is back, they answer again."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack

import httpx
import pytest

from tests.faults.test_database_restart import database_down
from tests.waiting import wait_until

pytestmark = pytest.mark.postgres


def test_reads_answer_503_while_the_database_is_down(postgres_server, postgres_url, ledger_processes):
    server = ledger_processes(postgres_url, "serve", "--no-auth")
    base = server.base_url
    made = httpx.post(f"{base}/api/profiles", json={"name": "outage", "steering": {"1": 1.0}}).json()
    activated = httpx.post(f"{base}/api/profiles/{made['id']}/activate").json()
    position = activated["position"]
    reads = [
        ("/api/profiles", {}),
        (f"/api/profiles/{made['id']}", {}),
        (f"/api/profiles/{made['id']}", {"min_position": position}),
        ("/api/profiles", {"min_position": position + 1}),  # not reached before the outage: must not be 422
        (f"/api/profiles/{made['id']}/versions", {"min_position": position}),
        ("/api/events", {"min_position": position}),
        ("/api/profiles/active", {"min_position": position}),
    ]
    with database_down(postgres_server):
        time.sleep(0.6)  # older than the active profile's cached answer may be
        for path, params in reads:
            answer = httpx.get(f"{base}{path}", params=params, timeout=30)
            assert answer.status_code == 503, (path, params, answer.text)
            assert answer.json()["error"] == "database_unavailable" and answer.headers["Retry-After"] == "1"
    wait_until(lambda: httpx.get(f"{base}/api/profiles/{made['id']}", timeout=30).status_code == 200, 30,
               "reads to answer again")
    assert httpx.get(f"{base}/api/profiles/active", params={"min_position": position}).json()["id"] == made["id"]


def test_an_open_event_stream_waits_out_an_outage_and_goes_on_where_it_was(postgres_server, postgres_url,
                                                                          ledger_processes):
    """The stream is not torn (nor logged as a server error): it says the database is away, keeps the
    connection alive, and once the database is back it sends the events that came since."""
    server = ledger_processes(postgres_url, "serve", "--no-auth")
    base = server.base_url
    httpx.post(f"{base}/api/profiles", json={"name": "before", "steering": {"1": 1.0}}).raise_for_status()
    lines: list[str] = []
    with httpx.Client(base_url=base, timeout=httpx.Timeout(10, read=30)) as http:
        with http.stream("GET", "/api/events/stream", params={"after": 0}) as stream:
            assert stream.status_code == 200
            read = stream.iter_lines()
            wait_until(lambda: lines.append(next(read)) or any('"before"' in line for line in lines), 30,
                       "the event before the outage")
            with database_down(postgres_server):
                wait_until(lambda: lines.append(next(read)) or "database is unavailable" in lines[-1], 30,
                           "the stream to say the database is away")
            wait_until(lambda: httpx.post(f"{base}/api/profiles", json={"name": "after", "steering": {}},
                                          timeout=30).status_code == 201, 30, "a write after the outage")
            wait_until(lambda: lines.append(next(read)) or '"after"' in lines[-1], 30, "the event after the outage")
    assert "Exception in ASGI application" not in server.output() and "Traceback" not in server.output()


def test_a_stream_opened_during_an_outage_to_resume_past_the_logs_head_is_ended_with_an_error_once_it_is_back(
        postgres_server, postgres_url, ledger_processes):
    """Opened while the database is away, the resume point cannot be checked; once it is back, a point this log
    never reached ends the stream with an error event (it waited for ever, missing all up to that point)."""
    server = ledger_processes(postgres_url, "serve", "--no-auth")
    httpx.post(f"{server.base_url}/api/profiles", json={"name": "before"}).raise_for_status()
    with httpx.Client(base_url=server.base_url, timeout=httpx.Timeout(10, read=30)) as http, ExitStack() as stack:
        with database_down(postgres_server):
            stream = stack.enter_context(http.stream("GET", "/api/events/stream",
                                                     headers={"Last-Event-ID": "999999"}))
            assert stream.status_code == 200
        lines, deadline = [], time.monotonic() + 60
        for line in stream.iter_lines():  # the stream ends (before: it waited for ever, a keep-alive at a time)
            lines.append(line)
            assert time.monotonic() < deadline, lines
    assert "event: error" in lines and any("past the log's head" in line for line in lines), lines
    assert "Traceback" not in server.output()


def test_concurrent_requests_for_one_profile_during_an_outage_are_refused_together_not_one_after_another(
    postgres_server, postgres_url, ledger_processes
):
    server = ledger_processes(postgres_url, "serve", "--no-auth")
    url = f"{server.base_url}/api/profiles/queued"
    httpx.post(f"{server.base_url}/api/profiles", json={"name": "queued", "steering": {"1": 1.0}}).raise_for_status()
    assert httpx.get(url).status_code == 200  # the profile is in the server's memory now
    answers: list[tuple[int, float]] = []

    def read() -> None:
        started = time.monotonic()
        status = httpx.get(url, timeout=120).status_code
        answers.append((status, time.monotonic() - started))

    with database_down(postgres_server):
        threads = [threading.Thread(target=read) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [status for status, _ in answers] == [503] * 6
    # each alone is refused once the pool gives up (3 s, twice); queued one behind another the sixth waited 37 s
    assert max(seconds for _, seconds in answers) < 15, answers
