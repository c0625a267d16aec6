"""Continuous batching through the real server: concurrent answers equal solo answers and replay, a short request
overtakes a long one, a full queue answers 503 with Retry-After and records nothing, a disconnect frees its row."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
import threading
import time
import uuid
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from steering.engine import SteeringEngine
from steering.models import load_model
from steering.sae import load_sae
from tests.api.conftest import assert_error, start_server
from tests.waiting import wait_until
from tests.steering.conftest import LAYER, long_context_model_dir, sae_dir, tiny_model_dir  # noqa: F401 - fixtures

WORDS = "tell me about the sea and the ledger that keeps every steering profile".split()


def messages(words: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": " ".join(WORDS[i % len(WORDS)] for i in range(words))}]


def serve(sqlite_url: str, tiny_model_dir, sae_dir, **limits: int):
    engine = SteeringEngine(
        load_model(tiny_model_dir, device="cpu"), load_sae(sae_dir), model_id="tiny", sae_id="tiny-sae", **limits
    )
    return start_server(sqlite_url, engine=engine)


@pytest.fixture
def server(tiny_model_dir, sae_dir, sqlite_url):
    running = serve(sqlite_url, tiny_model_dir, sae_dir, max_batch=8)
    try:
        yield running.base_url
    finally:
        running.stop()


@pytest.fixture
def small_server(long_context_model_dir, sae_dir, sqlite_url):
    running = serve(sqlite_url, long_context_model_dir, sae_dir, max_batch=1, max_queue=1)
    try:
        yield running.base_url
    finally:
        running.stop()


def complete(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """The answer's text, finish reason and ledger block, streamed or not."""
    with httpx.Client(base_url=url, timeout=120) as http:
        if not body.get("stream"):
            response = http.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            answer = response.json()
            return {"text": answer["choices"][0]["message"]["content"], "ledger": answer["ledger"]}
        text, ledger = "", None
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line.removeprefix("data: "))
                    text += chunk["choices"][0]["delta"].get("content", "")
                    ledger = chunk.get("ledger", ledger)
        return {"text": text, "ledger": ledger}


def create_profiles(url: str) -> list[str]:
    names = []
    for i in range(3):
        body = {"name": f"p{i}", "steering": {str(i * 7 + k): 14.0 for k in range(3)}, "layer": LAYER}
        assert httpx.post(f"{url}/api/profiles", json=body).status_code == 201
        names.append(f"p{i}")
    return names


def test_twenty_staggered_concurrent_requests_answer_as_alone_and_replay(server):
    names = create_profiles(server)
    bodies = []
    for i in range(20):
        body = {
            "messages": messages(1 + (i * 13) % 50),
            "seed": 500 + i,
            "temperature": (0.0, 0.8, 1.4)[i % 3],
            "max_tokens": 2 + (i * 7) % 23,
            "stream": i % 4 == 1,
        }
        if i % 4:
            body["profile"] = names[i % 3]
        bodies.append(body)
    together: dict[int, dict[str, Any]] = {}

    def send(index: int) -> None:
        time.sleep(0.01 * index)  # staggered: they arrive while others decode
        together[index] = complete(server, bodies[index])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    alone = [complete(server, body) for body in bodies]
    assert [together[i]["text"] for i in range(len(bodies))] == [answer["text"] for answer in alone]
    assert [together[i]["ledger"]["output_sha256"] for i in range(len(bodies))] == [a["ledger"]["output_sha256"] for a in alone]
    for i in range(len(bodies)):
        replay = httpx.post(f"{server}/api/executions/{together[i]['ledger']['execution_id']}/replay", timeout=120)
        assert replay.status_code == 200, replay.text
        assert replay.json()["reproduced"] is True
    status = httpx.get(f"{server}/api/steering/status").json()["scheduler"]
    assert status["finished"] >= 60 and status["refused"] == 0 and (status["running"], status["queued"]) == (0, 0)
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{server}/metrics").text)}
    assert families["ledger_generation_time_to_first_token_seconds"].type == "histogram"
    for name in ("ledger_generation_queue_depth", "ledger_generation_running_batch_size",
                 "ledger_generation_prefill_tokens_per_second", "ledger_generation_decode_tokens_per_second"):
        assert families[name].type == "gauge"


def long_running_body(url: str, max_tokens: int) -> dict[str, Any]:
    """A request whose answer runs to max_tokens (a random model may say end-of-sequence: pick a prompt that doesn't)."""
    for words in range(1, 20):
        body = {"messages": messages(words), "seed": 0, "temperature": 0.0, "max_tokens": max_tokens}
        answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300).json()
        if answer["usage"]["completion_tokens"] == max_tokens:
            return body
    pytest.skip("no prompt ran to max_tokens")


def test_a_request_arriving_during_a_long_generation_finishes_before_it(server):
    body = long_running_body(server, 300)
    with httpx.Client(base_url=server, timeout=120) as http:
        with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as long:
            lines = long.iter_lines()
            assert next(line for line in lines if '"content":"' in line and '"content":""' not in line)
            short = http.post("/v1/chat/completions", json={"messages": messages(30), "max_tokens": 4, "seed": 1})
            assert short.status_code == 200
            running = http.get("/api/steering/status").json()["scheduler"]["running"]
            assert running == 1, "the long generation is still running when the short one has its answer"
            assert any(line == "data: [DONE]" for line in lines)


def test_a_full_queue_answers_503_with_retry_after_records_nothing_and_a_disconnect_frees_the_row(small_server):
    url = small_server
    body = {"messages": messages(3), "temperature": 0.0, "max_tokens": 4000}
    with httpx.Client(base_url=url, timeout=120) as http:
        with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as long:
            lines = long.iter_lines()
            next(line for line in lines if '"content":"' in line and '"content":""' not in line)  # it holds the row
            queued = threading.Thread(target=complete, args=(url, {"messages": messages(2), "max_tokens": 3}))
            queued.start()
            deadline = time.monotonic() + 30
            while http.get("/api/steering/status").json()["scheduler"]["queued"] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            head = http.get("/ready").json()["log_position"]
            for stream in (False, True, False):
                refused = http.post("/v1/chat/completions", json={"messages": messages(2), "max_tokens": 3, "stream": stream})
                body_ = assert_error(refused, 503, "engine_busy")
                assert int(refused.headers["Retry-After"]) >= 1 and body_["error"]["retry_after_s"] >= 1  # OpenAI's shape, context alongside
            assert http.get("/health").status_code == 200
            assert http.get("/ready").json()["log_position"] == head, "nothing is recorded for refused requests"
        # The client went away mid-stream: its row is freed at the next step and the queued request runs.
        queued.join(60)
        assert not queued.is_alive()
        scheduler = http.get("/api/steering/status").json()["scheduler"]
        assert (scheduler["cancelled"], scheduler["refused"], scheduler["running"]) == (1, 3, 0)
        after = http.post("/v1/chat/completions", json={"messages": messages(2), "max_tokens": 3})
        assert after.status_code == 200


def test_a_request_keeps_the_profile_version_it_was_admitted_with_when_the_profile_is_revised(small_server):
    url = small_server
    with httpx.Client(base_url=url, timeout=120) as http:
        profile = http.post("/api/profiles", json={"name": "drifting", "steering": {"1": 12.0}, "layer": LAYER}).json()
        body = {"messages": messages(4), "max_tokens": 1500, "temperature": 0.8, "seed": 3, "profile": "drifting"}
        text, ledger = "", None
        with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
            for line in response.iter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line.removeprefix("data: "))
                text += chunk["choices"][0]["delta"].get("content", "")
                ledger = chunk.get("ledger", ledger)
                if text and ledger is None and "revised" not in body:
                    revised = http.put(f"/api/profiles/{profile['id']}", json={"steering": {"2": -20.0}})
                    assert revised.status_code == 200 and revised.json()["version"] == 2
                    assert http.get("/api/steering/status").json()["scheduler"]["running"] == 1, "still generating"
                    body["revised"] = True
        assert body.pop("revised") and ledger["profile_version"] == 1
        alone = http.post("/v1/chat/completions", json={**body, "profile_version": 1}).json()
        assert alone["choices"][0]["message"]["content"] == text
        assert alone["ledger"]["output_sha256"] == ledger["output_sha256"]


def test_more_generations_than_the_loops_worker_threads_share_one_batch_while_reads_are_answered(
        long_context_model_dir, sae_dir, sqlite_url):
    many = min(32, (os.cpu_count() or 1) + 4) + 2  # past the event loop's default executor (six threads on two cores)
    running = serve(sqlite_url, long_context_model_dir, sae_dir, max_batch=many)
    try:
        url = running.base_url
        body = long_running_body(url, 1000)
        answers: list[int] = []
        senders = [threading.Thread(target=lambda: answers.append(
            httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300).status_code)) for _ in range(many)]
        for sender in senders:
            sender.start()
        status = wait_until(lambda: (lambda seen: seen if seen["scheduler"]["running"] == many else None)(
            httpx.get(f"{url}/api/steering/status", timeout=60).json()), 60, f"{many} rows in one batch")
        assert status["scheduler"]["running"] == many  # before: six at a time, the rest waiting for a thread
        assert httpx.get(f"{url}/api/profiles", timeout=60).status_code == 200
        assert httpx.get(f"{url}/api/steering/status", timeout=60).json()["scheduler"]["running"] > 0, \
            "a read is answered while the generations still run (before: only once a thread came free)"
        for sender in senders:
            sender.join(300)
        assert answers == [200] * many
    finally:
        running.stop()


def bearer(token: dict[str, Any]) -> dict[str, str]:
    """The headers of a request made with ``token`` (as ``ledger tokens create --json`` printed it)."""
    return {"Authorization": f"Bearer {token['token']}"}


def secured_server(model_dir: Path, sae_dir: Path, sqlite_url: str, **limits: int
                   ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """A server with tokens on, generating with the long-context model, and two tokens made with the installed
    ``ledger``: an editor's (to be revoked) and an admin's."""
    def cli(*args: str) -> dict[str, Any]:
        ledger = str(Path(sys.executable).with_name("ledger"))
        done = subprocess.run([ledger, "--database", sqlite_url, *args, "--json"], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    editor, admin = cli("tokens", "create", "--name", "leaked", "--role", "editor"), cli(
        "tokens", "create", "--name", "ops", "--role", "admin")
    engine = SteeringEngine(load_model(model_dir, device="cpu"), load_sae(sae_dir), model_id="tiny", sae_id="tiny-sae",
                            **limits)
    return start_server(sqlite_url, engine=engine, auth=True), editor, admin


def revoked_while_it_runs(url: str, ask: Callable[[], None], editor: dict[str, Any], admin: dict[str, Any]) -> float:
    """Run ``ask`` in a thread of its own; once the model runs it, revoke the editor's token; wait for ``ask`` to
    end. Returns the seconds it took after the revocation."""
    asking = threading.Thread(target=ask)
    asking.start()
    wait_until(lambda: httpx.get(f"{url}/api/steering/status", headers=bearer(admin), timeout=60).json()[
        "scheduler"]["running"] == 1, 60, "the run under way")
    assert httpx.delete(f"{url}/api/tokens/{editor['id']}", headers=bearer(admin), timeout=60).status_code == 200
    revoked_at = time.monotonic()
    asking.join(300)
    return time.monotonic() - revoked_at


def test_a_streamed_answer_ends_soon_after_its_token_is_revoked_and_what_ran_is_recorded(
        long_context_model_dir, sae_dir, sqlite_url):
    running, editor, admin = secured_server(long_context_model_dir, sae_dir, sqlite_url)
    try:
        url, as_editor = running.base_url, {"Authorization": f"Bearer {editor['token']}"}
        body = {"messages": messages(3), "seed": 0, "temperature": 0.0, "max_tokens": 4000, "stream": True}
        with httpx.Client(base_url=url, timeout=120) as http:
            with http.stream("POST", "/v1/chat/completions", json=body, headers=as_editor) as answer:
                assert answer.status_code == 200
                lines = answer.iter_lines()
                assert next(line for line in lines if '"content":"' in line and '"content":""' not in line)
                revoked = http.delete(f"/api/tokens/{editor['id']}",
                                      headers={"Authorization": f"Bearer {admin['token']}"})
                assert revoked.status_code == 200, revoked.text
                revoked_at = time.monotonic()
                rest = [line for line in lines if line.startswith("data: ")]
            execution = json.loads(rest[0].removeprefix("data: "))["id"].removeprefix("chatcmpl-")
            recorded = wait_until(lambda: (lambda found: found if found.status_code == 200 else None)(http.get(
                f"/api/executions/{uuid.UUID(execution)}", headers={"Authorization": f"Bearer {admin['token']}"})),
                30, "the cut answer's record")
        assert rest[-1] == "data: [DONE]"
        error = json.loads(rest[-2].removeprefix("data: "))["error"]
        assert error["code"] == "unauthenticated" and "revoked" in error["message"]  # before: all 4,000 tokens
        assert time.monotonic() - revoked_at < 30
        assert recorded.json()["status"] == "partial"  # what it served is recorded
    finally:
        running.stop()


def test_a_whole_answer_stops_soon_after_its_token_is_revoked_and_is_not_handed_over(
        long_context_model_dir, sae_dir, sqlite_url):
    running, editor, admin = secured_server(long_context_model_dir, sae_dir, sqlite_url)
    try:
        url, as_admin = running.base_url, {"Authorization": f"Bearer {admin['token']}"}
        body = {"messages": messages(3), "seed": 0, "temperature": 0.0, "max_tokens": 4000}
        answers: list[httpx.Response] = []
        took = revoked_while_it_runs(url, lambda: answers.append(httpx.post(
            f"{url}/v1/chat/completions", json=body, headers=bearer(editor), timeout=300)), editor, admin)
        (answer,) = answers
        assert answer.status_code == 401 and "revoked" in answer.json()["error"]["message"], answer.text
        assert took < 30  # before: 200, with all 4,000 tokens, long after the revocation
        runs = httpx.get(f"{url}/api/events", params={"type": "Execution.Recorded"}, headers=as_admin,
                         timeout=60).json()["events"]
        assert [run["data"]["status"] for run in runs] == ["partial"]  # what it ran is recorded
    finally:
        running.stop()


def test_a_client_sending_more_cannot_shut_another_out_and_the_place_it_gives_up_records_nothing(
        long_context_model_dir, sae_dir, sqlite_url):
    running, greedy, modest = secured_server(long_context_model_dir, sae_dir, sqlite_url, max_batch=1, max_queue=1)
    try:
        url = running.base_url
        as_greedy, as_modest = bearer(greedy), bearer(modest)
        short = {"messages": messages(2), "max_tokens": 3}
        answers: dict[str, httpx.Response] = {}

        def ask(who: str, headers: dict[str, str]) -> threading.Thread:
            asking = threading.Thread(target=lambda: answers.__setitem__(who, httpx.post(
                f"{url}/v1/chat/completions", json=short, headers=headers, timeout=300)))
            asking.start()
            return asking

        def scheduler() -> dict[str, Any]:
            return httpx.get(f"{url}/api/steering/status", headers=as_modest, timeout=60).json()["scheduler"]

        with httpx.Client(base_url=url, timeout=120, headers=as_greedy) as http:
            body = {"messages": messages(3), "temperature": 0.0, "max_tokens": 4000, "stream": True}
            with http.stream("POST", "/v1/chat/completions", json=body) as holding:
                lines = holding.iter_lines()
                next(line for line in lines if '"content":"' in line and '"content":""' not in line)  # the row
                greedy_waiting = ask("greedy", as_greedy)
                wait_until(lambda: scheduler()["queued"] == 1, 60, "greedy's second request in the only place")
                head = httpx.get(f"{url}/ready").json()["log_position"]
                assert_error(http.post("/v1/chat/completions", json=short), 503, "engine_busy")  # more: refused
                modest_asking = ask("modest", as_modest)  # before: 503 engine_busy until greedy left
                greedy_waiting.join(60)
                gave_way = assert_error(answers["greedy"], 503, "engine_busy")
                assert "gave its place" in gave_way["error"]["message"]
                assert int(answers["greedy"].headers["Retry-After"]) >= 1
                assert httpx.get(f"{url}/ready").json()["log_position"] == head, "nothing recorded for either"
                assert modest_asking.is_alive() and scheduler()["queued"] == 1
        modest_asking.join(60)  # greedy's stream ended: modest takes the row
        assert answers["modest"].status_code == 200, answers["modest"].text
    finally:
        running.stop()


def test_a_compare_whose_steered_side_runs_keeps_its_twins_place_and_is_answered_whole(
        long_context_model_dir, sae_dir, sqlite_url):
    running, greedy, modest = secured_server(long_context_model_dir, sae_dir, sqlite_url, max_batch=1, max_queue=1)
    try:
        url = running.base_url
        as_greedy, as_modest = bearer(greedy), bearer(modest)
        compared: list[httpx.Response] = []
        body = {"messages": messages(3), "temperature": 0.0, "max_tokens": 1500, "compare": True}
        asking = threading.Thread(target=lambda: compared.append(httpx.post(
            f"{url}/v1/chat/completions", json=body, headers=as_greedy, timeout=300)))
        asking.start()
        wait_until(lambda: (lambda seen: seen["running"] == 1 and seen["queued"] == 1)(httpx.get(
            f"{url}/api/steering/status", headers=as_modest, timeout=60).json()["scheduler"]), 60,
            "the steered side running and its twin waiting")
        refused = httpx.post(f"{url}/v1/chat/completions", json={"messages": messages(2), "max_tokens": 3},
                             headers=as_modest, timeout=60)
        assert_error(refused, 503, "engine_busy")  # before: it took the twin's place, and the compare was a 503
        asking.join(300)
        (answer,) = compared
        assert answer.status_code == 200, answer.text
        assert answer.json()["unsteered"]["message"]["content"]
    finally:
        running.stop()


def signed_in(url: str, token: dict[str, Any]) -> tuple[httpx.Client, str]:
    """A browser of the console signed in with ``token``, and its session's CSRF token."""
    browser = httpx.Client(base_url=url, timeout=300, headers={"Accept": "text/html"})
    found = re.search(r'name="_csrf_token" value="([^"]+)"', browser.get("/login").text)
    assert found, "no CSRF token on the sign-in page"
    assert browser.post("/login", data={"_csrf_token": found.group(1), "token": token["token"]}).status_code == 303
    csrf = re.search(r'name="_csrf_token" value="([^"]+)"', browser.get("/playground").text)
    assert csrf, "no CSRF token on the playground"
    return browser, csrf.group(1)


@pytest.mark.parametrize("way", ["API replay", "console replay", "console run", "console run, streamed"])
def test_a_run_stops_soon_after_its_token_is_revoked_and_what_it_ran_is_recorded_as_partial(
        way, long_context_model_dir, sae_dir, sqlite_url):
    running, editor, admin = secured_server(long_context_model_dir, sae_dir, sqlite_url)
    try:
        url, as_admin = running.base_url, bearer(admin)
        original = httpx.post(f"{url}/v1/chat/completions", headers=as_admin, timeout=300, json={
            "messages": messages(3), "seed": 0, "temperature": 0.0, "max_tokens": 300}).json()["ledger"]
        batch = running.app.state.runtime.generation.engine.scheduler._batch
        step = batch.step
        batch.step = lambda: (time.sleep(0.1), step())[1]  # 300 steps: half a minute at least, on any machine
        answers: list[Any] = []
        if way == "API replay":
            start = lambda: answers.append(httpx.post(  # noqa: E731
                f"{url}/api/executions/{original['execution_id']}/replay", headers=bearer(editor), timeout=300))
        else:
            browser, csrf = signed_in(url, editor)
            run = {"_csrf_token": csrf, "prompt": "hello there", "max_tokens": "300", "temperature": "0"}
            start = {
                "console replay": lambda: answers.append(browser.post(
                    f"/executions/{original['execution_id']}/replay", data={"_csrf_token": csrf})),
                "console run": lambda: answers.append(browser.post("/playground", data=run)),
                "console run, streamed": lambda: answers.append(browser.get(re.search(  # the page, then its stream
                    r'/playground/runs/[\w-]+', browser.post("/playground", data=run, headers={
                        "HX-Request": "true"}).text).group(0), headers={"Accept": "text/event-stream"})),
            }[way]
        took = revoked_while_it_runs(url, start, editor, admin)
        assert took < 20  # before: the whole run, recorded as a success, its answer given
        (answer,) = answers
        if way == "console run, streamed":
            assert "was revoked or has expired: the answer was cut short" in answer.text, answer.text[-500:]
        elif way.startswith("console"):  # to the sign-in page, which says why (before: to the result)
            assert answer.status_code == 303 and answer.headers["location"].endswith("&ended=1"), answer.headers
        else:
            assert answer.status_code == 401 and "revoked" in answer.json()["detail"], answer.text
        runs = wait_until(lambda: (lambda found: found if len(found) == 2 else None)(httpx.get(
            f"{url}/api/events", params={"type": "Execution.Recorded"}, headers=as_admin).json()["events"]), 30,
            "the run's record")
        assert [run["data"]["status"] for run in runs] == ["success", "partial"]
        assert runs[-1]["actor"] == "leaked"
    finally:
        running.stop()


def test_a_replay_whose_client_leaves_stops_and_what_it_ran_is_recorded_as_partial(small_server):
    url = small_server
    body = {"messages": messages(3), "temperature": 0.0, "max_tokens": 3000, "seed": 5}
    original = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300).json()["ledger"]["execution_id"]
    with pytest.raises(httpx.ReadTimeout):  # the client gives up while the replay runs
        httpx.post(f"{url}/api/executions/{original}/replay", timeout=1.0)
    scheduler = wait_until(lambda: (lambda seen: seen if seen["running"] == 0 else None)(
        httpx.get(f"{url}/api/steering/status").json()["scheduler"]), 30, "the replay to stop")
    assert scheduler["cancelled"] == 1  # before: it ran all 3,000 tokens for nobody
    runs = wait_until(lambda: (lambda found: found if len(found) == 2 else None)(httpx.get(
        f"{url}/api/events", params={"type": "Execution.Recorded"}).json()["events"]), 30, "the replay's record")
    replayed = runs[-1]["data"]
    assert replayed["status"] == "partial" and replayed["replay_of"] == original

    cut = runs[-1]["originator_id"]  # replayed in turn, the partial run says it was cut short
    again = httpx.post(f"{url}/api/executions/{cut}/replay", timeout=300).json()
    assert again["reproduced"] is True and again["original_status"] == "partial", again
    assert any(warning.startswith("the original was cut short (partial, after ") for warning in again["warnings"])
