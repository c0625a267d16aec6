"""/health, /ready and /metrics."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import create, fresh, start_server


def test_health_and_ready(client):
    assert client.get("/health").json() == {"status": "ok"}
    profile = create(client, "ops")
    client.get(f"/api/profiles/{profile['id']}", params=fresh(client, profile["position"]))
    ready = client.get("/ready")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready" and body["database"] is True and body["runner_alive"] is True
    assert body["log_position"] >= profile["position"]
    assert {p["name"] for p in body["projections"]} >= {"profiles", "audit"}
    assert all(p["lag"] == 0 for p in body["projections"])


def test_ready_stays_ready_while_clients_write(database_url):
    """Writes under way are no lag: /ready reads the head and the read models' positions of one moment, and gives
    read models a moment to apply what was appended just now (one applied by the projection runner rather than by
    its own command, as under concurrent writers)."""
    server = start_server(database_url)
    stop, answers = threading.Event(), []

    def write(worker: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            for number in itertools.count():
                if stop.is_set():
                    return
                http.post("/api/profiles", json={"name": f"w{worker}-{number}"})

    try:
        with ThreadPoolExecutor(4) as pool, httpx.Client(base_url=server.base_url, timeout=30) as http:
            writers = [pool.submit(write, worker) for worker in range(3)]
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                answers.append(http.get("/ready"))
            stop.set()
            for writer in writers:
                writer.result()
    finally:
        stop.set()
        server.stop()
    refused = [answer.json()["detail"] for answer in answers if answer.status_code != 200]
    assert not refused and len(answers) > 20, refused[:3]  # before: "projections behind the log" at times


def test_ready_is_503_when_the_database_is_gone(pg_client, postgres_server):
    runtime = pg_client.app.state.runtime
    runtime.read_model.store.datastore.close()  # the process's one pool: as if the database had gone away
    response = pg_client.get("/ready")
    assert response.status_code == 503 and response.json()["database"] is False
    assert response.json()["detail"].startswith("database unreachable")


def test_metrics_exposition_is_prometheus_text_that_its_parser_reads(client):
    profile = create(client, "metric")
    client.get(f"/api/profiles/{profile['id']}", params=fresh(client, profile["position"]))
    client.get("/api/profiles/no-such-profile")  # a name no profile has: 404
    forged = client.post("/profiles", data={"name": "forged"}, headers={"Accept": "text/html"})
    assert forged.status_code == 403  # a console form without its CSRF token
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {family.name: family for family in text_string_to_metric_families(response.text)}

    def value(family: str, sample: str, **labels: str) -> float:
        found = [s.value for s in families[family].samples if s.name == sample and s.labels == labels]
        assert len(found) == 1, (sample, labels, families[family].samples)
        return found[0]

    assert families["ledger_http_requests"].type == "counter"
    assert value("ledger_http_requests", "ledger_http_requests_total", method="POST", route="/api/profiles", status="201") == 1
    route = "/api/profiles/{profile_id}"
    assert value("ledger_http_requests", "ledger_http_requests_total", method="GET", route=route, status="404") == 1
    refused = {"method": "POST", "route": "/profiles", "status": "403"}
    assert value("ledger_http_requests", "ledger_http_requests_total", **refused) == 1
    assert 'status="500"' not in response.text  # the refused form was counted as a server error
    assert families["ledger_http_request_duration_seconds"].type == "histogram"
    assert value(
        "ledger_http_request_duration_seconds", "ledger_http_request_duration_seconds_bucket",
        method="POST", route="/api/profiles", le="+Inf",
    ) == 1
    assert value("ledger_saves", "ledger_saves_total") == 1
    assert value("ledger_log_position", "ledger_log_position") >= profile["position"]
    assert value("ledger_projection_position", "ledger_projection_position", projection="profiles") >= 0
    assert value("ledger_projection_lag", "ledger_projection_lag", projection="profiles") >= 0
    assert "ledger_generation_queue_depth" not in families  # no model loaded in this app
