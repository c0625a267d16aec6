"""A client that goes away mid-generation, met as a user meets it: a real ``ledger serve`` (a tiny model on the CPU),
a plain HTTP client that closes its connection. Its generation leaves the batch (cancelled, not run to its last
token), and a departure is no server error."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.api.conftest import free_port
from tests.faults.conftest import launch, wait_until_healthy
from tests.steering.conftest import sae_dir, tiny_model_dir  # noqa: F401 - fixtures
from tests.waiting import wait_until

LONG = {"messages": [{"role": "user", "content": "tell me about the sea"}], "max_tokens": 480, "temperature": 0}


def stored(text: str) -> str:
    """Text as an execution's details hold it: a NUL (the tiny model's random bytes make some) as U+FFFD."""
    return text.replace("\x00", "\ufffd")


@pytest.fixture
def server(sqlite_url, tiny_model_dir, sae_dir, tmp_path):
    """A real ``ledger serve`` with the tiny model on the CPU, open mode."""
    port = free_port()
    running = launch(sqlite_url, ["serve", "--no-auth", "--port", str(port), "--model", str(tiny_model_dir),
                                  "--sae", str(sae_dir)], tmp_path / "serve.log", env={"LEDGER_DEVICE": "cpu"})
    running.base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(running)
        yield running
    finally:
        running.stop()


def test_a_client_that_stops_reading_a_stream_frees_its_place_in_the_batch(server):
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        for stream in (True, False):
            with httpx.Client(base_url=server.base_url, timeout=30) as leaving:
                if stream:
                    with leaving.stream("POST", "/v1/chat/completions", json={**LONG, "stream": True}) as answer:
                        assert answer.status_code == 200
                        next(answer.iter_lines())  # the first chunk; then the connection is closed
                else:
                    try:  # leaves at 50 ms, long before the tiny model ends
                        leaving.post("/v1/chat/completions", json=LONG, timeout=0.05)
                    except httpx.ReadTimeout:
                        pass
            left = 1 if stream else 2
            stats = wait_until(lambda: (lambda now: now if now["running"] == now["queued"] == 0 and (
                now["cancelled"] + now["finished"] >= left) else None)(
                http.get("/api/steering/status").json()["scheduler"]), 30, "the abandoned row to leave")
            assert (stats["cancelled"], stats["finished"]) == (1 if stream else 2, 0), (stream, stats)
        short = {**LONG, "max_tokens": 3}
        for stream in (True, False):  # and two that are read to their end: answered, 200
            with http.stream("POST", "/v1/chat/completions", json={**short, "stream": stream}) as answer:
                assert answer.status_code == 200 and answer.read()
        metrics = http.get("/metrics").text
        assert not re.search(r'route="/v1/chat/completions",status="5\d\d"', metrics), metrics
        chat_requests = r'ledger_http_requests_total{[^}]*route="/v1/chat/completions",status="(\d+)"} (\S+)'
        counted = dict(re.findall(chat_requests, metrics))
        assert counted == {"499": "2.0", "200": "2.0"}, metrics  # a stream whose client left: 499, begun 200
        logged = wait_until(lambda: (lambda lines: lines if len(lines) == 4 else None)(re.findall(
            r'"POST /v1/chat/completions HTTP/1.1" (\d+)', server.output())), 10, "a log line for each request")
        assert sorted(logged) == ["200", "200", "499", "499"], logged  # as counted (was 200 for the stream, and no
        assert "Traceback" not in server.output()  # line for the answer whose client left before it began)


def test_a_generation_its_client_leaves_part_way_is_recorded_as_partial_and_replays_to_the_same_text(server):
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        assert http.post("/api/profiles", json={"name": "sea"}).status_code == 201
        request = {**LONG, "profile": "sea", "seed": 5, "temperature": 0.8, "stream": True}
        received = ""
        with httpx.Client(base_url=server.base_url, timeout=30) as leaving:
            with leaving.stream("POST", "/v1/chat/completions", json=request,
                                headers={"Idempotency-Key": "story-1"}) as answer:
                for line in answer.iter_lines():
                    if line.startswith("data: {"):
                        received += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                    if len(received) > 20:
                        break  # then the connection is closed
        executions = wait_until(lambda: http.get("/api/profiles/sea/executions").json()["executions"], 30,
                                "the generation given up to be recorded")
        (execution,) = executions
        assert execution["status"] == "partial" and execution["seed"] == 5
        recorded = http.get(f"/api/executions/{execution['id']}").json()
        assert recorded["details"]["output"].startswith(stored(received))
        assert 0 < recorded["details"]["completion_tokens"] < LONG["max_tokens"]
        replay = http.post(f"/api/executions/{execution['id']}/replay").json()
        assert replay["reproduced"] is True, replay
        assert stored(replay["output"]) == recorded["details"]["output"]
        # what was given up claimed no Idempotency-Key: a retry with it runs, and is answered
        with http.stream("POST", "/v1/chat/completions", json={**request, "max_tokens": 3},
                         headers={"Idempotency-Key": "story-1"}) as again:
            assert again.status_code == 200 and b"[DONE]" in again.read()
        assert "Traceback" not in server.output()


def test_every_stream_a_client_leaves_is_recorded_once_however_late_it_leaves(server):
    """A reader that leaves after the generation ended, but before its last chunk, leaves a record too: whole, or
    partial when it left before the end (which of the two depends on the timing; that there is one does not)."""
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        for attempt in range(6):
            actor = f"leaver-{attempt}"
            with httpx.Client(base_url=server.base_url, timeout=30) as leaving:
                with leaving.stream("POST", "/v1/chat/completions", headers={"X-Actor": actor},
                                    json={**LONG, "max_tokens": 2 + attempt % 3, "stream": True}) as answer:
                    lines = answer.iter_lines()
                    while '"content":""' in (line := next(lines)) or not line.startswith("data: {"):
                        pass  # up to the first chunk with text; then the connection is closed
            recorded = wait_until(lambda: [event for event in http.get(
                "/api/events", params={"actor": actor}).json()["events"] if event["type"] == "Execution.Recorded"],
                30, f"the stream {actor} left to be recorded")
            assert len(recorded) == 1 and recorded[0]["data"]["status"] in ("success", "partial"), recorded
