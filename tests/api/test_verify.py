"""``GET /api/ledger/verify``: the tamper-evident chain, checked over HTTP."""

from __future__ import annotations

import pytest

from tests.api.conftest import assert_error, create
from tests.application.test_tamper_evidence import tamper

pytestmark = pytest.mark.postgres


def test_an_untouched_log_verifies(pg_client):
    made = create(pg_client, "p")
    report = pg_client.get("/api/ledger/verify").json()
    assert report["ok"] is True and report["problem"] is None and report["position"] is None
    assert report["checked"] == report["head_position"] == made["position"]
    assert isinstance(report["head_link"], str) and len(report["head_link"]) == 64


def test_a_changed_byte_is_reported_with_its_position(pg_client, postgres_url):
    profile = create(pg_client, "p")
    for strength in (2.0, 3.0):
        pg_client.put(f"/api/profiles/{profile['id']}", json={"steering": {"1": strength}})
    tamper(
        postgres_url,
        "UPDATE EVENTS SET state = overlay(state placing '\\x5a'::bytea from 3 for 1) WHERE notification_id = 3",
    )
    report = pg_client.get("/api/ledger/verify").json()
    assert report["ok"] is False
    assert report["problem"] == "altered" and report["position"] == 3 and report["detail"]


def test_verify_needs_a_token_when_auth_is_on(client_factory):
    with client_factory(auth=True) as client:
        assert_error(client.get("/api/ledger/verify"), 401, "unauthenticated")
        _, token = client.app.state.services.ledger.issue_token("auditor", "reader")
        response = client.get("/api/ledger/verify", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200 and response.json()["ok"] is True
