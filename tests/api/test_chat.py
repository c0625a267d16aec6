"""OpenAI-compatible generation through the real app, with a tiny model: the official client, streaming,
steering by profile, concurrency, replay and the steering status."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import msgspec
import openai
import pytest

from ledger.api.app import create_app
from ledger.settings import Database, Settings
from steering.engine import SteeringEngine
from steering.models import load_model
from steering.sae import load_sae
from tests.api.conftest import assert_error, start_server
from tests.waiting import wait_until
from tests.steering.conftest import D_SAE, LAYER, sae_dir, tiny_model_dir  # noqa: F401 - fixtures

MESSAGES = [{"role": "user", "content": "tell me about the sea"}]


class Served:
    def __init__(self, running, engine) -> None:
        self.running, self.engine = running, engine
        self.url = running.base_url
        self.client = self.new_client()

    def new_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def slow_steps(self, seconds: float = 0.02) -> None:
        """Every forward step takes at least ``seconds``: a long generation is long on any machine."""
        batch = self.engine.scheduler._batch
        step = batch.step

        def slow() -> object:
            time.sleep(seconds)
            return step()

        batch.step = slow


@pytest.fixture
def server(tiny_model_dir, sae_dir, sqlite_url):
    engine = SteeringEngine(load_model(tiny_model_dir, device="cpu"), load_sae(sae_dir), model_id="tiny", sae_id="tiny-sae")
    running = start_server(sqlite_url, engine=engine)
    try:
        yield Served(running, engine)
    finally:
        running.stop()


def client_of(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def create(http, name, steering, **fields):
    response = http.post("/api/profiles", json={"name": name, "steering": steering, "layer": LAYER, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def test_the_official_openai_client_gets_a_completion_plain_and_streamed(server):
    client = client_of(server)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    completion = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, seed=1, temperature=0)
    text = completion.choices[0].message.content
    assert completion.usage.completion_tokens > 0 and completion.choices[0].finish_reason in ("stop", "length")
    chunks = list(client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=8, seed=1, temperature=0, stream=True
    ))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].system_fingerprint == completion.system_fingerprint  # the same run, however it is read
    recorded = chunks[-1].model_extra["ledger"]["execution_id"]  # as a whole answer's id names its execution
    assert {chunk.id for chunk in chunks} == {f"chatcmpl-{recorded.replace('-', '')}"}  # was a clock reading
    assert completion.id == f"chatcmpl-{completion.model_extra['ledger']['execution_id'].replace('-', '')}"
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    parts = [{"role": "user", "content": [{"type": "text", "text": MESSAGES[0]["content"]}]}]  # OpenAI's content parts
    as_parts = client.chat.completions.create(model="tiny", messages=parts, max_tokens=8, seed=1, temperature=0)
    assert as_parts.choices[0].message.content == text


def test_a_stream_with_include_usage_has_the_field_in_every_chunk_null_but_in_the_last_as_openai_documents(server):
    def chunks(**options) -> list[dict]:
        with server.client.stream("POST", "/v1/chat/completions", json={
                "messages": MESSAGES, "max_tokens": 4, "seed": 1, "stream": True, **options}) as answer:
            lines = [line.removeprefix("data: ") for line in answer.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "[DONE]"
        return [json.loads(line) for line in lines[:-1]]

    counted = chunks(stream_options={"include_usage": True})
    assert [chunk["usage"] for chunk in counted[:-1]] == [None] * (len(counted) - 1)  # was no field: a KeyError
    assert counted[-1]["choices"] == [] and counted[-1]["usage"]["completion_tokens"] > 0
    assert all("usage" not in chunk for chunk in chunks())  # (not asked for: not there)


def test_the_model_served_says_when_it_was_made_here(server, tiny_model_dir):
    made = int((tiny_model_dir / "config.json").stat().st_mtime)  # was 0: 1970 in a client that shows it
    assert [card["created"] for card in server.client.get("/v1/models").json()["data"]] == [made]
    assert server.client.get("/v1/models/tiny").json()["created"] == made


def test_a_chat_naming_the_pinned_active_profile_runs_the_version_every_read_shows(server):
    http = server.client
    body = {"messages": MESSAGES, "max_tokens": 3, "seed": 5, "temperature": 0}
    profile = create(http, "pinned", {str(i): 30.0 for i in range(0, D_SAE, 5)})
    http.put(f"/api/profiles/{profile['id']}", json={"steering": {"1": 1.0}})
    http.post(f"/api/profiles/{profile['id']}/activate", json={"version": 1})
    assert http.get("/api/profiles/pinned").json()["version"] == 1
    named = http.post("/v1/chat/completions", json={**body, "profile": "pinned"}).json()
    active = http.post("/v1/chat/completions", json=body).json()  # the active profile, named by nothing
    assert named["ledger"]["profile_version"] == active["ledger"]["profile_version"] == 1  # named: was 2, the latest
    assert named["choices"][0]["message"]["content"] == active["choices"][0]["message"]["content"]


def test_seeded_requests_repeat_exactly_and_a_strong_profile_changes_the_text(server):
    http = server.client
    body = {"messages": MESSAGES, "max_tokens": 10, "seed": 5, "temperature": 0.8}
    first = http.post("/v1/chat/completions", json=body).json()
    again = http.post("/v1/chat/completions", json=body).json()
    assert first["choices"][0]["message"]["content"] == again["choices"][0]["message"]["content"]
    profile = create(http, "loud", {str(i): 30.0 for i in range(0, D_SAE, 5)})
    steered = http.post("/v1/chat/completions", json={**body, "profile": "loud", "compare": True}).json()
    assert steered["choices"][0]["message"]["content"] != first["choices"][0]["message"]["content"]
    assert steered["unsteered"]["message"]["content"] == first["choices"][0]["message"]["content"]
    assert (steered["ledger"]["profile_id"], steered["ledger"]["profile_version"]) == (profile["id"], 1)
    recorded = http.get(f"/api/executions/{steered['ledger']['execution_id']}").json()["details"]
    assert recorded["output"] == steered["choices"][0]["message"]["content"]
    assert recorded["unsteered"]["output"] == steered["unsteered"]["message"]["content"]  # both sides served: logged
    assert recorded["unsteered"]["finish_reason"] == steered["unsteered"]["finish_reason"]
    activated = http.post(f"/api/profiles/{profile['id']}/activate").json()
    status = http.get("/api/steering/status", params={"min_position": activated["position"]}).json()
    assert status["active_profile_id"] == profile["id"] and status["position"] >= activated["position"]
    active_body = {**body, "min_position": activated["position"]}
    assert http.post("/v1/chat/completions", json=active_body).json()["choices"][0]["message"]["content"] == \
        steered["choices"][0]["message"]["content"]
    deactivated = http.post("/api/profiles/deactivate").json()
    plain_body = {**body, "min_position": deactivated["position"]}
    assert http.post("/v1/chat/completions", json=plain_body).json()["choices"][0]["message"]["content"] == \
        first["choices"][0]["message"]["content"]


def test_concurrent_requests_over_four_profiles_each_match_their_solo_answer(server):
    http = server.client
    names = [create(http, f"p{i}", {str(i * 3 + k): 12.0 for k in range(3)})["name"] for i in range(4)]
    bodies = [
        {"messages": MESSAGES, "max_tokens": 8, "seed": i, "temperature": 0.7 if i % 2 else 0.0, "profile": names[i % 4]}
        for i in range(16)
    ]
    solo = [http.post("/v1/chat/completions", json=b).json()["choices"][0]["message"]["content"] for b in bodies]
    barrier = threading.Barrier(16)

    def send(body):
        barrier.wait()
        return server.new_client().post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(send, bodies))
    assert together == solo


@pytest.mark.parametrize("temperature", [1e-40, 1e-300, 5e-324])  # subnormal in float32; 0 there; the least double
def test_a_temperature_near_zero_samples_as_greedy_and_leaves_its_batch_mates_alone(server, temperature):
    plain = {"messages": MESSAGES, "max_tokens": 8, "seed": 3, "temperature": 0.8}
    alone = server.client.post("/v1/chat/completions", json=plain).json()["choices"][0]["message"]["content"]
    tiny = {"messages": MESSAGES, "max_tokens": 8, "seed": 3, "temperature": temperature}
    greedy = {**tiny, "temperature": 0}
    barrier = threading.Barrier(2)

    def send(body):
        barrier.wait()
        return server.new_client().post("/v1/chat/completions", json=body)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(send, [tiny, plain]))
    assert [answer.status_code for answer in answers] == [200, 200], answers[0].text
    texts = [answer.json()["choices"][0]["message"]["content"] for answer in answers]
    assert texts == [server.client.post("/v1/chat/completions", json=greedy).json()["choices"][0]["message"]["content"],
                     alone]
    replay = server.client.post(f"/api/executions/{answers[0].json()['ledger']['execution_id']}/replay").json()
    assert replay["reproduced"] is True


def test_a_streamed_completion_retried_with_its_idempotency_key_gets_the_same_stream_and_records_nothing(server):
    body = {"messages": MESSAGES, "max_tokens": 6, "seed": 2, "temperature": 0.9, "stream": True}
    headers = {"Idempotency-Key": "stream-once"}
    first = server.client.post("/v1/chat/completions", json=body, headers=headers)
    assert first.status_code == 200 and first.text.rstrip().endswith("data: [DONE]"), first.text
    log = server.client.get("/api/events").json()
    again = server.client.post("/v1/chat/completions", json=body, headers=headers)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.text == first.text and again.headers["content-type"].startswith("text/event-stream")
    assert server.client.get("/api/events").json() == log  # nothing more recorded


def test_a_run_whose_profile_is_deleted_meanwhile_is_answered_recorded_and_replays(server):
    """Every generation is recorded: one whose profile is deleted before its run is recorded keeps its answer, and
    its execution names the version it ran with (without a live profile), so it replays to the same text."""
    server.slow_steps()  # the profile is deleted long before the run ends, on any machine
    create(server.client, "doomed", {str(i): 30.0 for i in range(0, D_SAE, 7)})
    body = {"messages": MESSAGES, "max_tokens": 40, "temperature": 0.9, "seed": 7, "profile": "doomed"}
    with server.new_client().stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as streamed:
        lines = streamed.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))  # generating
        assert server.client.delete("/api/profiles/doomed").status_code == 200  # before its run is recorded
        events = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    last = msgspec.json.decode(events[-2])
    assert "error" not in last and last["choices"][0]["finish_reason"] in ("length", "stop"), last
    assert any("deleted" in warning for warning in last["ledger"]["warnings"]), last
    execution = server.client.get(f"/api/executions/{last['ledger']['execution_id']}").json()
    assert execution["profile_id"] is None and execution["details"]["deleted_profile"]["version"] == 1
    assert (last["ledger"]["profile_id"], last["ledger"]["profile_version"]) == (None, None)  # as recorded
    spec = server.client.get(f"/api/executions/{last['ledger']['execution_id']}/spec")
    assert spec.status_code == 200 and spec.json()["steering"] == {str(i): 30.0 for i in range(0, D_SAE, 7)}, spec.text
    replay = server.client.post(f"/api/executions/{last['ledger']['execution_id']}/replay").json()
    assert replay["reproduced"] is True, replay
    create(server.client, "doomed too", {"4": 9.0})
    stream = client_of(server).chat.completions.create(model="tiny", stream=True, messages=MESSAGES, max_tokens=40,
                                                       temperature=0, extra_body={"profile": "doomed too"})
    next(iter(stream))
    server.client.delete("/api/profiles/doomed too")
    assert list(stream)[-1].choices[0].finish_reason in ("length", "stop")  # the official client reads it whole


def test_what_the_official_client_may_send_is_taken_at_its_defaults_and_refused_where_it_would_change_the_answer(
        server):
    client = client_of(server)
    messages = [{"role": "system", "content": "be brief", "name": "policy"},
                {"role": "user", "content": "tell me about the sea", "name": "ann"},
                {"role": "assistant", "content": None}, {"role": "user", "content": "go on"}]
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=4, seed=5)
    nulls = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=4, seed=5, temperature=None, top_p=None, n=None, stream=None,
        presence_penalty=0, frequency_penalty=None, logprobs=False, response_format={"type": "text"}, top_logprobs=0,
        logit_bias={})  # values that change nothing (these two were refused as unknown fields)
    assert nulls.choices[0].message.content == plain.choices[0].message.content
    developer = [{**messages[0], "role": "developer"}, *messages[1:]]  # OpenAI's newer name for a system message
    assert client.chat.completions.create(model="tiny", messages=developer, max_tokens=4, seed=5).choices[
        0].message.content == plain.choices[0].message.content
    for refused, param in (({"presence_penalty": 0.5}, "presence_penalty"),
                           ({"frequency_penalty": -1}, "frequency_penalty"), ({"logprobs": True}, "logprobs"),
                           ({"top_logprobs": 2}, "top_logprobs"), ({"logit_bias": {"5": 10}}, "logit_bias"),
                           ({"response_format": {"type": "json_object"}}, "response_format.type"),
                           ({"extra_body": {"profile": "x", "profile_version": 0}}, "profile_version"),
                           ({"extra_body": {"min_position": -5}}, "min_position"),
                           ({"stream_options": {"include_usage": True}}, "stream_options"),
                           ({"stream": True, "stream_options": {"include_usage": "false"}},
                            "stream_options.include_usage"),
                           ({"stream": True, "stream_options": {"include_usage": True, "usage": True}},
                            "stream_options.usage"),
                           ({"extra_body": {"messages": [{"role": "user", "content": "x", "name2": 1}]}},
                            "messages[0].name2"),
                           ({"extra_body": {"messages": [{"content": "x"}]}}, "messages[0].role"),
                           ({"extra_body": {"messages": [{"role": "user", "content": []}]}}, "messages[0].content")):
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, **refused)
        assert error.value.param == param, error.value.message
    for refused, taken in (({"n": 2}, "takes only 1 or null"), ({"logprobs": True}, "takes only false or null")):
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, **refused)
        assert taken in error.value.message  # before: "Invalid enum value True", in Python's spelling


def test_whom_a_completion_is_for_changes_nothing_and_is_kept_nowhere(server):
    client = client_of(server)
    plain = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, seed=5)
    for_carol = client.chat.completions.with_raw_response.create(model="tiny", messages=MESSAGES, max_tokens=4, seed=5,
                                                                 user="carol-42")
    assert for_carol.parse().choices[0].message.content == plain.choices[0].message.content
    execution_id = for_carol.http_response.json()["ledger"]["execution_id"]
    assert "carol-42" not in server.client.get(f"/api/executions/{execution_id}").text  # an end user's id: not ours


def leaves_before_the_answer(server: Served, send: Callable[[httpx.Client], httpx.Response]) -> None:
    """``send`` a long generation's request and go away before it is answered: its row leaves the batch,
    cancelled, not finished."""
    server.slow_steps()  # 480 steps: seconds, whatever the machine
    before = server.client.get("/api/steering/status").json()["scheduler"]
    with httpx.Client(base_url=server.url, timeout=0.5) as leaving:
        try:
            answered = send(leaving)
        except httpx.ReadTimeout:
            pass
        else:
            pytest.fail(f"answered before the client left: {answered.status_code} {answered.text[:300]}")
    assert_given_up(server, before)


def assert_given_up(server: Served, before: dict[str, int]) -> None:
    """The abandoned row left the batch cancelled, not finished, and no answer counts as a server error."""
    stats = wait_until(lambda: (lambda now: now if now["running"] == now["queued"] == 0 and (
        now["cancelled"] + now["finished"] > before["cancelled"] + before["finished"]) else None)(
        server.client.get("/api/steering/status").json()["scheduler"]), 10, "the abandoned row to leave the batch")
    assert stats["cancelled"] == before["cancelled"] + 1 and stats["finished"] == before["finished"]
    assert not re.search(r'status="5\d\d"', server.client.get("/metrics").text)


LONG = {"messages": MESSAGES, "max_tokens": 480, "temperature": 0}  # greedy: all 480 tokens


def test_a_client_that_goes_away_before_its_answer_frees_its_place_in_the_batch(server):
    leaves_before_the_answer(server, lambda client: client.post("/v1/chat/completions", json=LONG))


def test_a_generation_its_client_leaves_before_the_answer_is_recorded_as_partial(server):
    create(server.client, "left", {"4": 2.0})
    leaves_before_the_answer(server, lambda client: client.post("/v1/chat/completions",
                                                                json={**LONG, "profile": "left", "seed": 3}))
    (execution,) = wait_until(lambda: server.client.get("/api/profiles/left/executions").json()["executions"], 10,
                              "the generation given up to be recorded")
    details = server.client.get(f"/api/executions/{execution['id']}").json()["details"]
    assert execution["status"] == "partial" and details["finish_reason"] == "cancelled"
    assert 0 < details["completion_tokens"] < LONG["max_tokens"] and details["output"]


def test_a_client_that_stops_reading_a_stream_frees_its_place_in_the_batch(server):
    server.slow_steps()
    before = server.client.get("/api/steering/status").json()["scheduler"]
    with httpx.Client(base_url=server.url, timeout=10) as leaving:
        with leaving.stream("POST", "/v1/chat/completions", json={**LONG, "stream": True}) as streamed:
            assert streamed.status_code == 200
            next(streamed.iter_lines())  # the first chunk; then the connection is closed
    assert_given_up(server, before)


def test_a_browser_that_leaves_the_playground_before_its_answer_frees_its_place_in_the_batch(server):
    def submit(browser: httpx.Client) -> httpx.Response:  # no JavaScript: the form waits for the texts
        page = browser.get("/playground", timeout=10).text
        token = re.search(r'name="_csrf_token" value="([^"]+)"', page).group(1)
        form = {"_csrf_token": token, "prompt": "tell me about the sea", "max_tokens": "480", "temperature": "0"}
        return browser.post("/playground", data=form, headers={"Accept": "text/html"})

    leaves_before_the_answer(server, submit)


def test_recorded_generations_replay_and_link_to_the_original(server):
    http = server.client
    create(http, "replayed", {"4": 9.0})
    done = http.post("/v1/chat/completions", json={
        "messages": MESSAGES, "max_tokens": 8, "seed": 11, "temperature": 0.9, "profile": "replayed"
    }).json()
    execution_id = done["ledger"]["execution_id"]
    replay = http.post(f"/api/executions/{execution_id}/replay")
    assert replay.status_code == 200, replay.text
    body = replay.json()
    assert body["reproduced"] is True and body["replay_sha256"] == body["original_sha256"] == done["ledger"]["output_sha256"]
    recorded = http.get(f"/api/executions/{body['replay_execution_id']}", params={"min_position": body["position"]}).json()
    assert recorded["replay_of"] == execution_id


def test_a_generation_run_with_no_profile_has_a_spec_of_its_inputs_and_no_steering(server):
    server.client.post("/api/profiles/deactivate")
    done = server.client.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 4, "seed": 8}).json()
    spec = server.client.get(f"/api/executions/{done['ledger']['execution_id']}/spec")
    assert spec.status_code == 200, spec.text
    body = spec.json()
    assert (body["profile_id"], body["profile_version"], body["steering"], body["seed"]) == (None, None, None, 8)
    assert body["details"]["sampling"]["max_tokens"] == 4


def test_a_replay_recorded_after_its_profile_was_deleted_replays_steered_too_and_its_unsteered_twin(server):
    http = server.client
    create(http, "gone", {str(i): 30.0 for i in range(0, D_SAE, 7)})
    done = http.post("/v1/chat/completions", json={
        "messages": MESSAGES, "max_tokens": 8, "seed": 5, "temperature": 0.9, "profile": "gone", "compare": True,
    }).json()
    assert done["choices"][0]["message"]["content"] != done["unsteered"]["message"]["content"]  # steering shows
    assert http.delete("/api/profiles/gone").status_code == 200
    first = http.post(f"/api/executions/{done['ledger']['execution_id']}/replay").json()
    assert first["reproduced"] is True, first
    twin = http.get(f"/api/executions/{first['replay_execution_id']}").json()["details"]["unsteered"]
    assert twin["output"] == done["unsteered"]["message"]["content"]  # the unsteered side ran again, the same
    second = http.post(f"/api/executions/{first['replay_execution_id']}/replay").json()
    assert second["reproduced"] is True and second["replay_sha256"] == done["ledger"]["output_sha256"], second


def test_a_replay_is_told_what_its_original_was_told_of_a_profile_made_for_another_model(server):
    http = server.client
    create(http, "elsewhere", {"4": 2.0}, model_id="another-model")
    done = http.post("/v1/chat/completions", json={
        "messages": MESSAGES, "max_tokens": 4, "seed": 3, "profile": "elsewhere"}).json()
    told = [warning for warning in done["ledger"]["warnings"] if "another-model" in warning]
    assert told, done["ledger"]
    replay = http.post(f"/api/executions/{done['ledger']['execution_id']}/replay").json()
    assert replay["reproduced"] is True and set(told) <= set(replay["warnings"]), replay  # was []


def test_a_generation_deleted_with_its_profile_is_gone_for_a_replay_as_for_a_read(server):
    http = server.client
    create(http, "doomed", {"4": 9.0})
    done = http.post("/v1/chat/completions", json={
        "messages": MESSAGES, "max_tokens": 4, "seed": 3, "profile": "doomed"}).json()
    execution_id = done["ledger"]["execution_id"]
    assert http.delete("/api/profiles/doomed", params={"delete_executions": "true"}).status_code == 200
    assert_error(http.get(f"/api/executions/{execution_id}"), 404, "execution_not_found")
    assert_error(http.post(f"/api/executions/{execution_id}/replay"), 404, "execution_not_found")


def test_bad_generation_requests_are_clear_4xx_and_400_under_v1_as_openai_answers_them(server):
    http = server.client
    create(http, "too far", {str(D_SAE + 1): 1.0})
    assert_error(http.post("/v1/chat/completions", json={"messages": MESSAGES, "profile": "too far"}), 400,
                 "profile_incompatible")
    assert_error(http.post("/v1/chat/completions", json={"messages": MESSAGES, "profile": "nobody"}), 404)
    assert_error(http.post("/v1/chat/completions", json={"messages": [], "max_tokens": 4}), 400)
    assert_error(http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 0}), 400)
    assert_error(http.post("/v1/chat/completions", json={"messages": MESSAGES, "temperature": -1}), 400)
    assert_error(http.post("/v1/chat/completions", json={"messages": MESSAGES, "bogus": 1}), 400)
    left_out = assert_error(http.post("/v1/chat/completions", json={"max_tokens": 4}), 400)
    assert left_out["error"]["param"] == "messages"  # before: null, where every other field error names its field
    assert assert_error(http.post("/api/profiles", json={"description": "no name"}), 422)["field"] == "name"
    for bounded in ({"n": 2}, {"stop": ["a", "b", "c", "d", "e"]}, {"stop": ""}, {"stop": ["a", ""]}):  # as documented
        refused = http.post("/v1/chat/completions", json={"messages": MESSAGES, **bounded})
        assert refused.status_code == 400 and refused.json()["error"]["param"] in ("n", "stop", "stop[1]"), refused.text
    for role in ("user", "system"):  # only an assistant's message may come without content
        empty = http.post("/v1/chat/completions", json={"messages": [{"role": role, "content": None}]})
        assert empty.status_code == 400 and empty.json()["error"]["param"] == "messages[0].content", empty.text
    stats = http.get("/api/steering/status").json()["scheduler"]
    for stream in (False, True):  # refused before generating, streamed or not
        refused = http.post("/v1/chat/completions", json={"messages": MESSAGES, "stop": ["\x00"], "stream": stream})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "stop", refused.text
    assert http.get("/api/steering/status").json()["scheduler"]["admitted"] == stats["admitted"]
    assert_error(http.post("/api/executions/not-a-uuid/replay"), 422)
    client = client_of(server)  # what the official client makes of them: the message, the code, the field
    for request, status, code, param in (
        ({"extra_body": {"profile": "nobody"}}, 404, "profile_not_found", "profile"),
        ({"extra_body": {"profile": " "}}, 404, "profile_not_found", "profile"),  # a name no profile may have
        ({"extra_body": {"profile": "x" * 100_000}}, 400, "invalid_value", "profile"),  # not echoed back whole
        ({"extra_body": {"profile": "too far", "profile_version": 9}}, 404, "profile_version_not_found",
         "profile_version"),
        ({"model": "gpt-4"}, 404, "model_not_found", "model"),
        ({"max_tokens": 0}, 400, "invalid_value", "max_tokens"),
        ({"extra_body": {"profile": "too far"}}, 400, "profile_incompatible", "profile"),
        ({"max_tokens": 510}, 400, "context_length_exceeded", "messages"),  # the tiny model holds 512 positions
        ({"max_tokens": openai.NOT_GIVEN, "max_completion_tokens": 510, "stream": True}, 400,
         "context_length_exceeded", "messages"),
        ({"max_completion_tokens": 2}, 400, "invalid_value", "max_completion_tokens"),  # and max_tokens 4: was 2
    ):
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(**{"model": "tiny", "messages": MESSAGES, "max_tokens": 4, **request})
        error = refused.value
        assert (error.status_code, error.code, error.param, error.type) == (status, code, param, "invalid_request_error")
        assert error.message.startswith(f"Error code: {status} - ") and len(error.message) > 30, error.message
    warned = create(http, "elsewhere", {"1": 1.0}, model_id="another-model")
    activation = http.post(f"/api/profiles/{warned['id']}/activate").json()
    assert any("another-model" in w for w in activation["warnings"])
    deep = create(http, "deep", {"1": 1.0}, layer=50)
    assert_error(http.post(f"/api/profiles/{deep['id']}/activate"), 422, "profile_incompatible")


def test_without_a_model_generation_answers_503(sqlite_url):
    from litestar.testing import TestClient

    app = create_app(Settings(database=Database(sqlite_url)), auth=False)
    with TestClient(app, base_url="http://testserver.localhost") as client:
        assert_error(client.post("/v1/chat/completions", json={"messages": MESSAGES}), 503, "model_not_loaded")
        assert client.get("/api/steering/status").json()["model_loaded"] is False
        assert client.get("/v1/models").json() == {"object": "list", "data": []}


def test_reading_the_hook_after_a_position_the_log_has_not_reached_is_a_422(server):
    http = server.client
    assert_error(http.get("/api/steering/status", params={"min_position": 10_000}), 422, "invalid_request")
    assert_error(http.post("/v1/chat/completions", json={"messages": MESSAGES, "min_position": 10_000}), 400)


def test_the_playground_refuses_a_max_tokens_the_api_refuses_rather_than_replacing_it(server):
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        token = re.search(r'name="_csrf_token" value="([^"]+)"', browser.get("/playground").text).group(1)
        form = {"_csrf_token": token, "prompt": "tell me about the sea", "max_tokens": "0", "temperature": "0"}
        refused = browser.post("/playground", data=form, headers={"Accept": "text/html"})
        assert refused.status_code == 422 and "max_tokens must be at least 1" in refused.text, refused.text[:500]
    assert server.client.get("/api/steering/status").json()["scheduler"]["admitted"] == 0


def test_a_compared_stream_its_browser_leaves_part_way_is_recorded_as_partial_with_its_twin(server):
    server.slow_steps()  # 480 steps: seconds, whatever the machine
    with server.new_client() as browser:
        page = browser.get("/playground").text
        token = re.search(r'name="_csrf_token" value="([^"]+)"', page).group(1)
        form = {"_csrf_token": token, "prompt": "tell me about the sea", "max_tokens": "480", "temperature": "0",
                "seed": "3", "compare": "on"}
        started = browser.post("/playground", data=form, headers={"Accept": "text/html", "HX-Request": "true"})
        address = re.search(r'sse-connect="([^"]+)"', started.text).group(1)
        with browser.stream("GET", address) as events:
            lines = events.iter_lines()
            while "event: unsteered" not in next(lines):  # both sides have begun; then the browser goes away
                pass
    (recorded,) = wait_until(lambda: server.client.get("/api/events", params={"type": "Execution.Recorded"})
                             .json()["events"], 10, "the run given up to be recorded")
    details = server.client.get(f"/api/executions/{recorded['originator_id']}").json()
    assert details["status"] == "partial" and details["details"]["finish_reason"] == "cancelled"
    assert details["details"]["unsteered"]["output"]  # was not recorded: the steered side was, at once, alone


def test_an_execution_records_the_model_sae_and_layer_that_served_it_and_the_warnings_it_was_served_with(server):
    http = server.client
    foreign = http.post("/api/profiles", json={"name": "foreign", "steering": {"4": 9.0},
                                               "model_id": "meta-llama/Llama-3-8B", "sae_id": "llama-sae-l7"})
    assert foreign.status_code == 201, foreign.text  # no layer: the SAE's is applied
    done = http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 4, "seed": 4,
                                                   "profile": "foreign"}).json()
    assert len(done["ledger"]["warnings"]) == 2, done["ledger"]
    details = http.get(f"/api/executions/{done['ledger']['execution_id']}").json()["details"]
    assert details["served_with"] == {"model_id": "tiny", "sae_id": "tiny-sae", "layer": LAYER}
    assert details["warnings"] == done["ledger"]["warnings"]
    plain = http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 4, "seed": 4}).json()
    details = http.get(f"/api/executions/{plain['ledger']['execution_id']}").json()["details"]
    assert details["served_with"] == {"model_id": "tiny", "sae_id": "tiny-sae", "layer": None}  # nothing steered
    assert "warnings" not in details


def test_a_replay_under_another_chat_template_names_the_tokenizer_as_what_differs(tiny_model_dir, sae_dir,
                                                                                 sqlite_url, tmp_path):
    renamed = shutil.copytree(tiny_model_dir, tmp_path / tiny_model_dir.name)
    template = renamed / "chat_template.jinja"
    template.write_text("Bob says: " + template.read_text())

    def serving(model_dir):
        engine = SteeringEngine(load_model(model_dir, device="cpu"), load_sae(sae_dir), model_id="tiny")
        return Served(start_server(sqlite_url, engine=engine), engine)

    first = serving(tiny_model_dir)
    try:
        done = first.client.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 4, "seed": 2,
                                                                "temperature": 0}).json()
    finally:
        first.running.stop()
    second = serving(renamed)
    try:
        replay = second.client.post(f"/api/executions/{done['ledger']['execution_id']}/replay").json()
    finally:
        second.running.stop()
    assert [warning.split(":")[1].split(" was")[0].strip() for warning in replay["warnings"]] == ["tokenizer_digest"]


def test_a_replay_refuses_overrides_it_would_not_honour_and_records_a_reason_it_is_given(server):
    http = server.client
    done = http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 4, "seed": 6}).json()
    replay = f"/api/executions/{done['ledger']['execution_id']}/replay"
    assert assert_error(http.post(replay, json={"seed": 99}), 422, "invalid_request")["field"] == "seed"
    assert_error(http.post(replay, content=b"not json", headers={"Content-Type": "application/json"}), 422)
    answered = http.post(replay, json={"reason": "checking the paper's table 2"})
    assert answered.status_code == 200 and answered.json()["reproduced"] is True, answered.text
    recorded = http.get(f"/api/executions/{answered.json()['replay_execution_id']}").json()
    assert recorded["reason"] == "checking the paper's table 2"
