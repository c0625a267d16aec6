"""Two API servers and one separate projection worker on one PostgreSQL: the invariants of the concurrent-writers
test hold across both servers, and a read with ``min_position`` on either server sees a write made on the other."""

from __future__ import annotations

import httpx
import pytest

from ledger.application import ProfileLedger
from ledger.settings import Database
from tests.faults.workload import assert_log_matches, run_workload, seed_profiles

pytestmark = pytest.mark.postgres

WRITERS = 32
ACTIVATORS = 32


def test_two_servers_and_a_projection_worker(postgres_url, credentials, ledger_processes):
    ledger = ProfileLedger(env=Database(postgres_url).eventsourcing_env(pool_size=1))
    hot_id, other_ids = seed_profiles(ledger, ACTIVATORS)
    ledger.close()
    servers = [ledger_processes(postgres_url, "serve", "--no-projections") for _ in range(2)]
    ledger_processes(postgres_url, "project")
    urls = [server.base_url for server in servers]

    seen = run_workload(urls, credentials.editor, hot_id, other_ids, writers=WRITERS, updates_each=3, activations_each=2)

    assert {a.status for a in seen.failed("update") + seen.failed("activate")} <= {409}
    assert seen.most_active_seen <= 1, "two profiles were active at once in a state of the read side"
    assert seen.polls > 5 and not seen.errors, seen.errors[:3]
    ledger = assert_log_matches(postgres_url, seen, hot_id, other_ids)
    try:
        slot = ledger.active_slot()
        assert slot is not None
        for writer, reader in ((urls[0], urls[1]), (urls[1], urls[0])):
            made = httpx.put(
                f"{writer}/api/profiles/{hot_id}", json={"description": f"via {writer}"}, headers=credentials.editor
            ).json()
            row = httpx.get(
                f"{reader}/api/profiles/{hot_id}",
                params={"min_position": made["position"]},
                headers=credentials.editor,
                timeout=30,
            ).json()
            assert row["description"] == f"via {writer}" and row["version"] == made["version"]
            active = httpx.get(
                f"{reader}/api/profiles/active", params={"min_position": made["position"]}, headers=credentials.editor
            ).json()
            assert active["id"] == str(slot.profile_id)
    finally:
        ledger.close()
