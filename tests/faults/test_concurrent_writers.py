"""64 clients update one profile while 64 others activate profiles, through a real server over HTTP.

Every acknowledged write is in the log exactly once, every failed one is absent, the hot profile's versions
have no gaps, and no state of the read side ever shows two active profiles.
"""

from __future__ import annotations

import httpx
import pytest

from ledger.application import ProfileLedger
from ledger.settings import Database
from tests.faults.workload import assert_log_matches, run_workload, seed_profiles

pytestmark = pytest.mark.postgres

WRITERS = 64
ACTIVATORS = 64


def test_concurrent_writers_through_one_server(postgres_url, credentials, ledger_processes):
    ledger = ProfileLedger(env=Database(postgres_url).eventsourcing_env(pool_size=1))
    hot_id, other_ids = seed_profiles(ledger, ACTIVATORS)
    ledger.close()
    server = ledger_processes(postgres_url, "serve")

    seen = run_workload(
        [server.base_url], credentials.editor, hot_id, other_ids, writers=WRITERS, updates_each=3, activations_each=2
    )

    assert seen.acknowledged("update") and seen.acknowledged("activate")
    assert {a.status for a in seen.failed("update") + seen.failed("activate")} <= {409}, seen.failed("update")[:3]
    assert seen.polls > 5 and not seen.errors, seen.errors[:3]
    assert seen.most_active_seen <= 1, "two profiles were active at once in a state of the read side"
    ledger = assert_log_matches(postgres_url, seen, hot_id, other_ids)
    try:
        head = ledger.recorder.max_notification_id()
        slot = ledger.active_slot()
        listing = httpx.get(
            f"{server.base_url}/api/profiles",
            params={"limit": 500, "min_position": head},
            headers=credentials.editor,
            timeout=30,
        ).json()
        assert [row["id"] for row in listing["profiles"] if row["is_active"]] == [str(slot.profile_id)]
    finally:
        ledger.close()


def test_processes_starting_together_on_a_new_database_all_make_it_and_write(postgres_server, tmp_path):
    """Four `ledger create` at once on an empty database, five times: each makes the tables it needs beside the
    others (they collided on the catalog, and one in three exited 70)."""
    import subprocess
    import sys
    import uuid

    for round_ in range(5):
        url = postgres_server.create_database(f"ledger_race_{uuid.uuid4().hex[:8]}")
        started = [subprocess.Popen([sys.executable, "-m", "ledger", "--database", url, "create", f"p{index}"],
                                    cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                   for index in range(4)]
        failed = [(process.wait(timeout=120), process.stderr.read()) for process in started]
        assert [code for code, _ in failed] == [0, 0, 0, 0], (round_, failed)
