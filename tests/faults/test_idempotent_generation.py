"""Twins: requests with one Idempotency-Key sent at once to a real ``ledger serve`` (a tiny model on the CPU), met
with the official ``openai`` client. One generation runs; the others are told so in OpenAI's shape, with when to
retry, and the retry gets the first answer."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest

from tests.api.conftest import free_port
from tests.faults.conftest import launch, wait_until_healthy
from tests.faults.test_clients_that_leave import server  # noqa: F401 - the fixture: a real ledger serve, tiny model
from tests.steering.conftest import sae_dir, tiny_model_dir  # noqa: F401 - fixtures

MESSAGES = [{"role": "user", "content": "tell me about the sea"}]


def test_chat_twins_with_one_key_run_one_generation_and_the_others_hear_so_in_openais_shape(server):
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)
    model = client.models.list().data[0].id
    http = httpx.Client(base_url=server.base_url, timeout=30)
    admitted = http.get("/api/steering/status").json()["scheduler"]["admitted"]
    answers: list[object] = []
    start = threading.Barrier(3)

    def ask() -> None:
        start.wait()
        try:
            answers.append(client.chat.completions.create(
                model=model, messages=MESSAGES, max_tokens=400, temperature=0, seed=3,
                extra_headers={"Idempotency-Key": "twins"}))
        except openai.APIStatusError as error:
            answers.append(error)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done = [answer for answer in answers if not isinstance(answer, openai.APIStatusError)]
    refused = [answer for answer in answers if isinstance(answer, openai.APIStatusError)]
    assert len(done) == 1 and len(refused) == 2, answers
    for error in refused:  # before: {"error": "idempotency_key_in_use", ...}, which the client shows as no message
        assert (error.status_code, error.code) == (409, "idempotency_key_in_use"), error.body
        assert error.message and "retry" in error.message and error.response.headers["Retry-After"] == "1"
    assert http.get("/api/steering/status").json()["scheduler"]["admitted"] == admitted + 1  # one ran, not three

    again = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=400, temperature=0, seed=3,
                                           extra_headers={"Idempotency-Key": "twins"})
    assert again.id == done[0].id and again.choices[0].message.content == done[0].choices[0].message.content
    with pytest.raises(openai.BadRequestError) as other:
        client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=5, temperature=0, seed=3,
                                       extra_headers={"Idempotency-Key": "twins"})
    assert other.value.code == "idempotency_key_reused"
    recorded = [e for e in http.get("/api/events").json()["events"] if e["type"] == "Execution.Recorded"]
    assert len(recorded) == 1, recorded


def test_a_stream_served_while_its_key_was_claimed_on_another_server_is_recorded_without_the_key(
        server, sqlite_url, tmp_path):
    other = launch(sqlite_url, ["serve", "--no-auth", "--no-model", "--port", str(port := free_port())],
                   tmp_path / "other.log")
    other.base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(other)
        request = {"messages": MESSAGES, "max_tokens": 400, "temperature": 0, "seed": 4, "stream": True}
        received, events = "", []
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            with http.stream("POST", "/v1/chat/completions", json=request,
                             headers={"Idempotency-Key": "shared"}) as answer:
                for line in answer.iter_lines():
                    if line.startswith("data: {") and not events:  # the first chunk: the other server claims the key
                        claimed = httpx.post(f"{other.base_url}/api/profiles", json={"name": "elsewhere"},
                                             headers={"Idempotency-Key": "shared"})
                        assert claimed.status_code == 201
                    if line.startswith("data: {"):
                        events.append(json.loads(line[6:]))
                        received += (events[-1].get("choices") or [{}])[0].get("delta", {}).get("content") or ""
            assert not any("error" in event for event in events), events[-1]  # before: served, then an error
            recorded = [e for e in http.get("/api/events").json()["events"] if e["type"] == "Execution.Recorded"]
            assert len(recorded) == 1, recorded  # before: none; what was served is in the log
            execution = http.get(f"/api/executions/{recorded[0]['originator_id']}").json()
            assert execution["details"]["output"] == received.replace("\x00", "\ufffd")
    finally:
        other.stop()
