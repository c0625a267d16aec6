"""/health, /ready and /metrics."""

from __future__ import annotations

import re

from tests.api.conftest import create, fresh


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


def test_ready_is_503_when_the_database_is_gone(pg_client, postgres_server):
    services = pg_client.app.state.services
    services.read_model.store.datastore.close()  # the process's one pool: as if the database had gone away
    response = pg_client.get("/ready")
    assert response.status_code == 503 and response.json()["database"] is False
    assert response.json()["detail"].startswith("database unreachable")


def test_metrics_exposition(client):
    profile = create(client, "metric")
    client.get(f"/api/profiles/{profile['id']}", params=fresh(client, profile["position"]))
    client.get("/api/profiles/not-a-uuid")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'ledger_http_requests_total{method="POST",route="/api/profiles",status="201"} 1' in text
    assert re.search(r'ledger_http_requests_total\{method="GET",route="/api/profiles/\{profile_id\}",status="422"\} 1', text)
    assert re.search(r'ledger_http_request_duration_seconds_bucket\{method="POST",route="/api/profiles",le="\+Inf"\} 1', text)
    assert "ledger_events_appended_total 1" in text
    assert re.search(r"^ledger_log_position \d+$", text, re.M)
    assert re.search(r'^ledger_projection_position\{projection="profiles"\} \d+$', text, re.M)
    assert re.search(r'^ledger_projection_lag\{projection="profiles"\} \d+$', text, re.M)
    for line in text.splitlines():  # every sample line parses
        assert line.startswith("#") or re.fullmatch(r'[a-z_]+(\{([a-z_]+="[^"]*",?)*\})? (-?[0-9.e+]+|\+Inf)', line), line
