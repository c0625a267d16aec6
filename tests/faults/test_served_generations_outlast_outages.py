"""Every generation a client was served is recorded, even when PostgreSQL is away for a moment as it ends: a real
``ledger serve`` (a tiny model on the CPU), a plain HTTP client reading a stream."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.api.conftest import free_port
from tests.faults.conftest import launch, wait_until_healthy
from tests.faults.test_clients_that_leave import stored
from tests.faults.test_database_restart import database_down
from tests.steering.conftest import sae_dir, tiny_model_dir  # noqa: F401 - fixtures

pytestmark = pytest.mark.postgres

OUTAGE_S = 8.0  # longer than a request waits for a connection (5 s)


def test_a_stream_that_ends_while_the_database_is_away_is_recorded_once_it_is_back(
    postgres_server, postgres_url, tiny_model_dir, sae_dir, tmp_path
):
    port = free_port()
    server = launch(postgres_url, ["serve", "--no-auth", "--port", str(port), "--model", str(tiny_model_dir),
                                   "--sae", str(sae_dir)], tmp_path / "serve.log", env={"LEDGER_DEVICE": "cpu"})
    server.base_url = f"http://127.0.0.1:{port}"
    down = threading.Event()
    outage = threading.Thread()
    try:
        wait_until_healthy(server)

        def away_for_a_moment() -> None:
            with database_down(postgres_server):
                down.set()
                time.sleep(OUTAGE_S)

        outage = threading.Thread(target=away_for_a_moment)
        request = {"messages": [{"role": "user", "content": "tell me about the sea"}], "max_tokens": 480,
                   "temperature": 0, "stream": True}
        with httpx.Client(base_url=server.base_url, timeout=120) as http:
            with http.stream("POST", "/v1/chat/completions", json=request) as streamed:
                assert streamed.status_code == 200
                lines = streamed.iter_lines()
                chunks = [json.loads(next(lines)[6:])]
                outage.start()  # while it generates
                assert down.wait(30)
                chunks += [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
            outage.join()
            assert "error" not in chunks[-1], chunks[-1]
            served = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c.get("choices"))
            execution = http.get(f"/api/executions/{chunks[-1]['ledger']['execution_id']}")
            assert execution.status_code == 200, execution.text
            assert execution.json()["details"]["output"] == stored(served)
    finally:
        if outage.is_alive():
            outage.join()
        server.stop()
