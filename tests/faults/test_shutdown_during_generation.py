"""A server stopped (SIGTERM) while it generates, met as its clients and its auditors meet it: a real ``ledger serve``
with the tiny model, plain HTTP clients, and the log read afterwards by the installed ``ledger``. A request still
waiting for a place is refused (503 ``shutting_down``, nothing ran or is recorded); a running one is cut short, its
client told so, and what it generated is in the log as ``partial`` before the server exits."""

from __future__ import annotations

import json
import signal
import subprocess
import threading

import httpx
import pytest

from tests.api.conftest import free_port
from tests.faults.conftest import launch, wait_until_healthy
from tests.steering.conftest import sae_dir, tiny_model_dir  # noqa: F401 - fixtures
from tests.waiting import wait_until

LONG = {"messages": [{"role": "user", "content": "tell me about the sea"}], "max_tokens": 480, "temperature": 0.8}


@pytest.mark.parametrize("inline", ["on", "off"])  # off: the server's worker applies what the drain records
def test_generations_running_or_waiting_when_the_server_stops_are_answered_and_what_ran_is_recorded(
    sqlite_url, tiny_model_dir, sae_dir, tmp_path, inline,
):
    port = free_port()
    server = launch(sqlite_url, ["serve", "--no-auth", "--port", str(port), "--model", str(tiny_model_dir),
                                 "--sae", str(sae_dir)], tmp_path / "serve.log",
                    env={"LEDGER_DEVICE": "cpu", "LEDGER_MAX_BATCH": "1", "LEDGER_INLINE_PROJECTIONS": inline,
                         "LEDGER_GENERATION_GRACE": "0"})
    server.base_url = base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(server)
        streamed: list[str] = []
        began = threading.Event()

        def stream() -> None:
            with httpx.stream("POST", f"{base}/v1/chat/completions", json={**LONG, "seed": 1, "stream": True},
                              timeout=60) as answer:
                for line in answer.iter_lines():
                    streamed.append(line)
                    began.set()

        queued: list[httpx.Response] = []
        reader = threading.Thread(target=stream)
        reader.start()
        assert began.wait(60), server.output()
        waiters = [threading.Thread(target=lambda stream=stream: queued.append(httpx.post(
            f"{base}/v1/chat/completions", json={**LONG, "seed": 2, "stream": stream}, timeout=60)))
            for stream in (False, True)]
        for waiter in waiters:
            waiter.start()  # one row: they wait for a place behind the stream
        wait_until(lambda: httpx.get(f"{base}/api/steering/status").json()["scheduler"]["queued"] == 2, 30,
                   "the other requests to wait for a place")
        server.process.send_signal(signal.SIGTERM)
        reader.join(30), [waiter.join(30) for waiter in waiters]
        assert server.process.wait(30) in (0, -signal.SIGTERM), server.output()  # uvicorn ends as the signal asks
    finally:
        server.stop()

    for refused in queued:  # was run to its end after the server said it stopped, recorded, and answered 500;
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1", refused.text  # (a stream: 200,
        assert refused.json()["error"]["code"] == "shutting_down"  # its error in the stream, its id of nothing)
    payloads = [line[6:] for line in streamed if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]" and json.loads(payloads[-2])["error"]["code"] == "shutting_down", payloads[-3:]
    served = "".join(json.loads(payload)["choices"][0]["delta"].get("content") or ""
                     for payload in payloads[:-2])
    listed = subprocess.run(["ledger", "--database", sqlite_url, "executions", "--json"], capture_output=True,
                            text=True, timeout=120)
    executions = json.loads(listed.stdout)["executions"]  # was none: lost at exit, or (off) never applied
    assert [(e["seed"], e["status"]) for e in executions] == [(1, "partial")], executions
    recorded = executions[0]["details"]
    assert recorded["finish_reason"] == "cancelled"
    assert recorded["output"].startswith(served.replace("\x00", "\ufffd")), (served, recorded["output"])
    assert "Traceback" not in server.output()


def test_an_answer_cut_short_by_a_shutdown_names_the_execution_that_recorded_what_it_had_generated(
    sqlite_url, tiny_model_dir, sae_dir, tmp_path,
):
    port = free_port()
    server = launch(sqlite_url, ["serve", "--no-auth", "--port", str(port), "--model", str(tiny_model_dir),
                                 "--sae", str(sae_dir)], tmp_path / "serve.log",
                    env={"LEDGER_DEVICE": "cpu", "LEDGER_GENERATION_GRACE": "0"})
    server.base_url = base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(server)
        answers: list[httpx.Response] = []
        asking = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{base}/v1/chat/completions", json={**LONG, "seed": 3}, timeout=60)))
        asking.start()
        wait_until(lambda: answers or httpx.get(f"{base}/api/steering/status").json()["scheduler"]["running"], 30,
                   "the answer to be generating")
        assert not answers, answers[0].text  # (still generating)
        server.process.send_signal(signal.SIGTERM)
        asking.join(30)
        assert server.process.wait(30) in (0, -signal.SIGTERM), server.output()
    finally:
        server.stop()
    error = answers[0].json()["error"]
    assert answers[0].status_code == 503 and error["code"] == "shutting_down", answers[0].text
    listed = subprocess.run(["ledger", "--database", sqlite_url, "executions", "--json"], capture_output=True,
                            text=True, timeout=120)
    (recorded,) = json.loads(listed.stdout)["executions"]
    assert recorded["status"] == "partial"
    assert error["execution_id"] == recorded["id"], error  # was absent: the partial record could not be found
