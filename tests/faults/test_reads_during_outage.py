"""With the database stopped, queries answer 503 ``database_unavailable`` (never 422 or 500), with or without a
position to wait for; once it is back, they answer again."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.faults.test_database_restart import database_down
from tests.waiting import wait_until

pytestmark = pytest.mark.postgres


def test_reads_answer_503_while_the_database_is_down(postgres_server, postgres_url, ledger_processes):
    server = ledger_processes(postgres_url, "serve", "--no-auth")
    base = server.base_url
    made = httpx.post(f"{base}/api/profiles", json={"name": "outage", "steering": {"1": 1.0}}).json()
    activated = httpx.post(f"{base}/api/profiles/{made['id']}/activate").json()
    position = activated["position"]
    reads = [
        ("/api/profiles", {}),
        (f"/api/profiles/{made['id']}", {}),
        (f"/api/profiles/{made['id']}", {"min_position": position}),
        ("/api/profiles", {"min_position": position + 1}),  # not reached before the outage: must not be 422
        (f"/api/profiles/{made['id']}/versions", {"min_position": position}),
        ("/api/events", {"min_position": position}),
        ("/api/profiles/active", {"min_position": position}),
    ]
    with database_down(postgres_server):
        time.sleep(0.6)  # older than the active profile's cached answer may be
        for path, params in reads:
            answer = httpx.get(f"{base}{path}", params=params, timeout=30)
            assert answer.status_code == 503, (path, params, answer.text)
            assert answer.json()["error"] == "database_unavailable" and answer.headers["Retry-After"] == "1"
    wait_until(lambda: httpx.get(f"{base}/api/profiles/{made['id']}", timeout=30).status_code == 200, 30,
               "reads to answer again")
    assert httpx.get(f"{base}/api/profiles/active", params={"min_position": position}).json()["id"] == made["id"]
