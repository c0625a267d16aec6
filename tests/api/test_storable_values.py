"""Every value the API accepts, every read model can hold: the integers past a column's range are refused (422,
nothing written) at the edge, the extremes inside it are stored, and the read models reach the log's head."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.values import INT32_MAX, INT64_MAX, INT64_MIN, METADATA_BYTES_MAX
from tests.api.conftest import assert_error, create, fresh


def head(client) -> int:
    return int(client.app.state.runtime.ledger.recorder.max_notification_id() or 0)


def refused(client, method: str, url: str, field: str, **kwargs: Any) -> None:
    before = head(client)
    body = assert_error(client.request(method, url, **kwargs), 422)
    assert field in (body.get("field") or "") + body["detail"], body
    assert head(client) == before, f"{method} {url} wrote although it was refused"


def assert_read_models_at_head(client) -> None:
    position = head(client)
    assert client.get("/api/profiles", params=fresh(client, position)).status_code == 200
    ready = client.get("/ready").json()
    assert all(p["position"] == position and p["parked"] == 0 for p in ready["projections"]), ready


def test_a_layer_past_32_bits_is_refused_on_create_update_and_import(client):
    refused(client, "POST", "/api/profiles", "layer", json={"name": "deep", "layer": INT32_MAX + 1})
    profile = create(client, "deepest", layer=INT32_MAX)
    refused(client, "PUT", f"/api/profiles/{profile['id']}", "layer", json={"layer": 2**63})
    document = {"name": "imported", "layer": INT32_MAX + 1, "steering": {"1": 1.0}}
    refused(client, "POST", "/api/profiles/import", "layer", json=document)
    read = client.get(f"/api/profiles/{profile['id']}", params=fresh(client, head(client)))
    assert read.json()["layer"] == INT32_MAX
    assert_read_models_at_head(client)


def test_a_feature_index_past_32_bits_is_refused(client):
    refused(client, "POST", "/api/profiles", "steering", json={"name": "wide", "steering": {str(INT32_MAX + 1): 1.0}})
    profile = create(client, "widest", steering={str(INT32_MAX): 1.0})
    assert profile["steering"] == {str(INT32_MAX): 1.0}
    assert_read_models_at_head(client)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seed", INT64_MAX + 1),
        ("seed", INT64_MIN - 1),
        ("seed", 2**64),
        ("entity_count", INT64_MAX + 1),
        ("entity_count", -1),
        ("duration_ms", -1.0),
        ("duration_ms", 10**400),
    ],
)
def test_execution_integers_past_64_bits_are_refused(client, field, value):
    profile = create(client)
    refused(client, "POST", f"/api/profiles/{profile['id']}/executions", field, json={field: value})


def test_execution_extremes_inside_64_bits_are_stored(client):
    profile = create(client)
    recorded = []
    for seed, entity_count in ((INT64_MIN, 0), (INT64_MAX, INT64_MAX), (-1, 1)):
        response = client.post(
            f"/api/profiles/{profile['id']}/executions",
            json={"seed": seed, "entity_count": entity_count, "duration_ms": 1.7976931348623157e308},
        )
        assert response.status_code == 201, response.text
        recorded.append((response.json()["id"], seed, entity_count))
    for execution_id, seed, entity_count in recorded:
        read = client.get(f"/api/executions/{execution_id}", params=fresh(client, head(client))).json()
        assert (read["seed"], read["entity_count"]) == (seed, entity_count)
    assert_read_models_at_head(client)


def test_metadata_past_its_limits_is_refused(client):
    refused(client, "POST", "/api/profiles", "metadata", json={"name": "big", "metadata": {"n": 2**64}})
    padding = "x" * METADATA_BYTES_MAX
    refused(client, "POST", "/api/profiles", "metadata", json={"name": "big", "metadata": {"text": padding}})
    profile = create(client, "edge", metadata={"n": INT64_MIN, "m": INT64_MAX, "text": "é" * 1000})
    read = client.get(f"/api/profiles/{profile['id']}", params=fresh(client, profile["position"])).json()
    assert read["metadata"] == {"n": INT64_MIN, "m": INT64_MAX, "text": "é" * 1000}
    assert_read_models_at_head(client)
