"""NUL characters cannot be stored in PostgreSQL text or jsonb: they are refused at the edge (422), so no event
that a read model could not hold is ever recorded, and queries carrying one are refused rather than failing."""

from __future__ import annotations

import pytest

from tests.api.conftest import assert_error, create


@pytest.mark.parametrize(
    "body",
    [
        {"name": "a\u0000b"},
        {"name": "ok", "description": "x\u0000"},
        {"name": "ok", "tags": ["t\u0000"]},
        {"name": "ok", "metadata": {"k": "v\u0000"}},
        {"name": "ok", "metadata": {"k\u0000": 1}},
        {"name": "ok", "reason": "why\u0000"},
    ],
)
def test_text_with_a_nul_character_is_refused_and_nothing_is_written(pg_client, body):
    before = pg_client.get("/api/events").json()["events"]
    assert_error(pg_client.post("/api/profiles", json=body), 422)
    assert pg_client.get("/api/events").json()["events"] == before


@pytest.mark.parametrize("field", ["error_message", "run_id"])
def test_an_executions_text_with_a_nul_character_is_refused_naming_its_field(pg_client, field):
    url = f"/api/profiles/{create(pg_client, 'ran')['id']}/executions"
    assert assert_error(pg_client.post(url, json={field: "x\u0000"}), 422)["field"] == field


def test_queries_with_a_nul_character_are_refused_naming_the_parameter(pg_client):
    created = create(pg_client, "fine")
    for params in ({"tag": "x\u0000"}, {"tag": ["ok", "x\u0000"]}, {"search": "\u0000"}, {"product": "p\u0000"}):
        body = assert_error(pg_client.get("/api/profiles", params=params), 422, "invalid_request")
        assert body["field"] in params  # the parameter's name on the wire, not an internal one
    assert assert_error(pg_client.get("/api/events", params={"actor": "a\u0000"}), 422)["field"] == "actor"
    for path in ("/api/runs/a%00b/spec", "/api/runs/a%00b/profile"):
        assert assert_error(pg_client.get(path), 422, "invalid_request")["field"] == "run_id"
    assert pg_client.get("/api/profiles", params={"min_position": created["position"]}).status_code == 200
