"""Concurrent writers on PostgreSQL: optimistic concurrency holds, names stay unique, one profile is active."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import pytest

from ledger.domainmodel import ActiveSlot, Profile
from ledger.errors import ProfileNameTakenError, StaleVersionError

pytestmark = pytest.mark.postgres
THREADS = 32


def run_together(count: int, task):
    """Start ``count`` calls of ``task(i)`` at the same instant; return each result or exception."""
    barrier = Barrier(count)

    def call(i):
        barrier.wait()
        try:
            return task(i)
        except Exception as error:  # noqa: BLE001 - collected for the assertions
            return error

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(call, range(count)))


def test_updates_from_the_same_expected_version_let_exactly_one_win_and_tell_the_others_it_is_stale(pg_ledger):
    """Whoever reaches the database second, the precondition (``If-Match``) is what it fails: 412, not 409."""
    pid = pg_ledger.create_profile({"name": "contended", "steering": {}}).profile.id
    results = run_together(
        THREADS, lambda i: pg_ledger.update_profile(pid, {"steering": {i: 1.0}}, expected_version=1)
    )
    winners = [r for r in results if not isinstance(r, Exception)]
    losers = [r for r in results if isinstance(r, Exception)]
    assert len(winners) == 1
    assert len(losers) == THREADS - 1 and all(isinstance(e, StaleVersionError) for e in losers), losers
    events = list(pg_ledger.repository.event_store.get(pid))
    assert [e.originator_version for e in events] == [1, 2]
    assert pg_ledger.get_profile(pid).steering == winners[0].profile.steering


def test_updates_without_expected_version_are_all_applied_in_sequence(pg_ledger):
    pid = pg_ledger.create_profile({"name": "queued", "steering": {}}).profile.id
    results = run_together(THREADS, lambda i: pg_ledger.update_profile(pid, {"steering": {i: 1.0}}))
    assert not [r for r in results if isinstance(r, Exception)]
    history = pg_ledger.profile_history(pid)
    assert [r.version for r in history] == list(range(1, THREADS + 2))
    assert sorted(next(iter(r.state.steering)) for r in history[1:]) == list(range(THREADS))


def test_creating_one_name_in_many_spellings_leaves_exactly_one_profile(pg_ledger):
    spellings = ["Same Name", "same name", " SAME NAME ", "same   name", "SaMe NaMe "]
    results = run_together(THREADS, lambda i: pg_ledger.create_profile({"name": spellings[i % len(spellings)]}))
    created = [r for r in results if not isinstance(r, Exception)]
    assert len(created) == 1
    assert all(isinstance(r, ProfileNameTakenError) for r in results if isinstance(r, Exception))
    topics = [n.topic for n in pg_ledger.recorder.select_notifications(start=1, limit=1000)]
    assert sum(topic.endswith("Profile.Created") for topic in topics) == 1


def test_concurrent_activations_leave_one_active_profile_and_a_linear_history(pg_ledger):
    ids = [pg_ledger.create_profile({"name": f"p{i}"}).profile.id for i in range(THREADS)]
    results = run_together(THREADS, lambda i: pg_ledger.activate_profile(ids[i]))
    assert not [r for r in results if isinstance(r, Exception)]
    slot_events = list(pg_ledger.repository.event_store.get(ActiveSlot.ID))
    assert [e.originator_version for e in slot_events] == list(range(1, len(slot_events) + 1))
    activated = [e.profile_id for e in slot_events if isinstance(e, ActiveSlot.Activated)]
    assert sorted(activated) == sorted(ids)  # every activation is in the log once
    active = [pid for pid in ids if pg_ledger.get_profile(pid).is_active]
    assert active == [pg_ledger.active_slot().profile_id] == [activated[-1]]
    for pid in ids:  # each profile saw Activated, then Deactivated unless it is the last one
        marks = [type(e).__name__ for e in pg_ledger.repository.event_store.get(pid) if not isinstance(e, Profile.Created)]
        assert marks == (["Activated"] if pid == activated[-1] else ["Activated", "Deactivated"])
