"""Activation, deletion and executions through the application, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from ledger.domainmodel import CommandContext, acting_as
from ledger.errors import ProfileActiveError, ProfileNotFoundError, ProfileVersionNotFoundError
from tests.application.conftest import log_types


def test_one_profile_is_active_and_activation_can_pin_a_version(ledger):
    a = ledger.create_profile({"name": "a"}).profile.id
    b = ledger.create_profile({"name": "b"}).profile.id
    ledger.update_profile(b, {"steering": {1: 1.0}})
    ledger.activate_profile(a)
    ledger.activate_profile(b, version=1)
    slot = ledger.active_slot()
    assert (slot.profile_id, slot.pinned_version) == (b, 1)
    assert not ledger.get_profile(a).is_active and ledger.get_profile(b).is_active
    with pytest.raises(ProfileVersionNotFoundError):
        ledger.activate_profile(a, version=5)
    ledger.deactivate_profile()
    assert ledger.active_slot().profile_id is None
    assert not ledger.deactivate_profile().changed


def test_the_active_profile_cannot_be_deleted(ledger):
    pid = ledger.create_profile({"name": "a"}).profile.id
    ledger.activate_profile(pid)
    before = log_types(ledger)
    with pytest.raises(ProfileActiveError):
        ledger.delete_profile(pid)
    assert log_types(ledger) == before


def test_a_deleted_name_is_reusable_and_the_old_history_stays_in_the_log(ledger):
    old = ledger.create_profile({"name": "reuse", "steering": {1: 1.0}}).profile.id
    ledger.update_profile(old, {"description": "v2"})
    ledger.delete_profile(old)
    with pytest.raises(ProfileNotFoundError):
        ledger.get_profile(old)
    new = ledger.create_profile({"name": "REUSE"}).profile.id
    assert new != old
    assert [r.version for r in ledger.profile_history(old)] == [1, 2]
    assert ledger.get_profile(old, version=2).description == "v2"


def test_delete_executions_is_recorded_on_the_deletion(ledger):
    pid = ledger.create_profile({"name": "a"}).profile.id
    ledger.record_execution(pid, run_id="cohort-1", seed=1)
    outcome = ledger.delete_profile(pid, delete_executions=True)
    recorded = [ledger.mapper.to_domain_event(n) for n in ledger.recorder.select_notifications(start=1, limit=100)]
    deleted = [e for e in recorded if type(e).__qualname__ == "Profile.Deleted"]
    assert [e.delete_executions for e in deleted] == [True]
    assert recorded[-1].originator_version and max(n.id for n in ledger.recorder.select_notifications(start=1, limit=100)) == outcome.position


def test_executions_record_the_version_and_refuse_unknown_targets(ledger):
    pid = ledger.create_profile({"name": "a"}).profile.id
    ledger.update_profile(pid, {"steering": {2: 1.0}})
    recorded = ledger.record_execution(pid, run_id="c1", seed=42, entity_count=10, status="partial", duration_ms=12.5)
    execution = ledger.get_execution(recorded.execution_id)
    assert (execution.profile_version, execution.seed, execution.status) == (2, 42, "partial")
    with pytest.raises(ProfileVersionNotFoundError):
        ledger.record_execution(pid, version=3)
    ledger.delete_profile(pid)
    with pytest.raises(ProfileNotFoundError):
        ledger.record_execution(pid)


def test_every_stored_event_names_its_actor_and_time_in_commit_order(ledger):
    with acting_as(CommandContext(actor="alice", reason="setup")):
        pid = ledger.create_profile({"name": "a"}).profile.id
    with acting_as(CommandContext(actor="bob")):
        ledger.activate_profile(pid)
    notifications = ledger.recorder.select_notifications(start=1, limit=100)
    events = [ledger.mapper.to_domain_event(n) for n in notifications]
    assert [n.id for n in notifications] == sorted(n.id for n in notifications)
    assert [e.actor for e in events] == ["alice", "alice", "alice", "bob", "bob", "bob"]
    assert all(e.timestamp is not None for e in events)
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
