"""Each read model, after a scripted history of commands, says what the event log says."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import pytest

from ledger.application import ProfileLedger
from ledger.domainmodel import CommandContext, acting_as


@dataclass
class History:
    alpha: UUID
    beta: UUID
    gamma: UUID
    beta_again: UUID
    executions: dict[str, UUID]


def run_script(ledger: ProfileLedger) -> History:
    create = ledger.create_profile
    alpha = create(
        {
            "name": "Alpha",
            "description": "the first",
            "steering": {1: 0.5},
            "tags": ["x", "y"],
            "products": ["p1"],
            "model_id": "m",
            "sae_id": "s",
            "layer": 3,
        }
    ).profile.id
    beta = create({"name": "Beta", "steering": {2: 1.0}, "tags": ["y"]}).profile.id
    with acting_as(CommandContext(actor="alice", reason="tune", correlation_id="req-1")):
        ledger.update_profile(alpha, {"steering": {1: 0.7, 5: 0.1}})  # v2: spec
    ledger.update_profile(alpha, {"description": "edited in place"}, bump_version=False)  # still v2
    ledger.update_profile(alpha, {"name": "Alpha Prime", "tags": ["z"], "metadata": {"k": [1]}})  # v3: rename
    ledger.activate_profile(beta, version=1)  # pinned
    ledger.activate_profile(alpha)  # follows the latest; beta is deactivated
    ledger.update_profile(alpha, {"layer": 4})  # v4: the active version moves with it
    executions = {
        "run-1": ledger.record_execution(alpha, run_id="run-1", seed=7, entity_count=10).execution_id,
        "run-2": ledger.record_execution(beta, run_id="run-2", seed=8, version=1).execution_id,
        "run-3": ledger.record_execution(beta, run_id="run-3", status="failed", error_message="boom").execution_id,
    }
    ledger.deactivate_profile()
    ledger.delete_profile(beta, delete_executions=True)
    gamma = create({"name": "Gamma", "steering": {9: 2.0}}).profile.id
    executions["run-4"] = ledger.record_execution(gamma, run_id="run-4", duration_ms=1.5).execution_id
    ledger.delete_profile(gamma)  # keeps its executions
    beta_again = create({"name": "  BETA ", "steering": {3: 0.25}, "products": ["p2"]}).profile.id
    ledger.activate_profile(beta_again, version=1)
    return History(alpha, beta, gamma, beta_again, executions)


@pytest.fixture
def history(ledger, project) -> History:
    history = run_script(ledger)
    project()
    return history


def test_profiles_hold_the_current_state_of_live_profiles_only(ledger, read_model, history):
    listed = read_model.list_profiles(limit=100).items
    assert {row.id for row in listed} == {history.alpha, history.beta_again}
    for row in listed:
        state = ledger.get_profile(row.id)
        assert row.name == state.name
        assert row.description == state.description
        assert (row.model_id, row.sae_id, row.layer) == (state.model_id, state.sae_id, state.layer)
        assert row.steering == state.steering
        assert row.feature_count == len(state.steering)
        assert list(row.tags) == state.tags and list(row.products) == state.products
        assert row.metadata == state.metadata
        assert row.version == state.version
        assert row.is_active == state.is_active
        assert (row.created_at, row.updated_at) == (state.created_at, state.updated_at)
    alpha = read_model.get_profile(history.alpha)
    assert alpha.name == "Alpha Prime" and alpha.version == 4 and alpha.description == "edited in place"
    assert (alpha.is_active, alpha.pinned_version, alpha.execution_count) == (False, None, 1)
    assert alpha.last_executed_at == ledger.get_execution(history.executions["run-1"]).created_on
    beta_again = read_model.get_profile(history.beta_again)
    assert (beta_again.is_active, beta_again.pinned_version) == (True, 1)
    assert read_model.get_profile(history.beta) is None and read_model.get_profile(history.gamma) is None


def test_a_deleted_name_can_be_found_again_on_its_new_owner(read_model, history):
    assert read_model.get_profile_by_name("beta").id == history.beta_again
    assert read_model.get_profile_by_name("  Alpha   PRIME ").id == history.alpha
    assert read_model.get_profile_by_name("Alpha") is None
    assert read_model.get_profile_by_name("gamma") is None


def test_versions_are_the_profile_history_including_deleted_profiles(ledger, read_model, history):
    for profile_id in (history.alpha, history.beta, history.gamma, history.beta_again):
        expected = ledger.profile_history(profile_id)
        rows = read_model.list_versions(profile_id, limit=100).items
        assert [row.version for row in rows] == [record.version for record in expected]
        for row, record in zip(rows, expected):
            state = record.state
            assert (row.name, row.description, list(row.tags), list(row.products), row.metadata) == (
                state.name, state.description, state.tags, state.products, state.metadata
            )
            assert (row.model_id, row.sae_id, row.layer) == (state.model_id, state.sae_id, state.layer)
            assert row.steering == state.steering
            assert (row.recorded_at, row.actor, row.reason) == (record.recorded_at, record.actor, record.reason)
            assert row.event_type == record.event_type
    second = read_model.get_version(history.alpha, 2)
    assert second.description == "edited in place"  # the edit kept version 2 and rewrote its row
    assert (second.actor, second.reason, second.correlation_id) == ("alice", "tune", "req-1")
    assert read_model.get_version(history.alpha, 5) is None


def test_versions_paginate_oldest_first(read_model, history):
    first = read_model.list_versions(history.alpha, limit=3)
    assert [row.version for row in first.items] == [1, 2, 3]
    rest = read_model.list_versions(history.alpha, limit=3, cursor=first.next_cursor)
    assert [row.version for row in rest.items] == [4] and rest.next_cursor is None


def test_the_active_profile_is_the_slot_with_the_version_in_effect(ledger, read_model, history, project):
    active = read_model.active_profile()
    assert (active.profile_id, active.name, active.pinned_version, active.version) == (
        history.beta_again, "BETA", 1, 1
    )
    ledger.update_profile(history.beta_again, {"steering": {3: 0.5}})  # pinned: stays at 1
    project()
    assert read_model.active_profile().version == 1
    ledger.activate_profile(history.alpha)  # unpinned: follows alpha's latest
    ledger.update_profile(history.alpha, {"layer": 5})
    project()
    active = read_model.active_profile()
    assert (active.profile_id, active.pinned_version, active.version) == (history.alpha, None, 5)
    ledger.deactivate_profile()
    project()
    assert read_model.active_profile() is None
    assert not any(row.is_active for row in read_model.list_profiles(limit=100).items)


def test_executions_of_deleted_profiles_go_only_when_asked(read_model, history):
    assert read_model.get_execution(history.executions["run-2"]) is None
    assert read_model.get_execution(history.executions["run-3"]) is None
    assert read_model.list_executions(profile_id=history.beta).items == ()
    kept = read_model.get_execution(history.executions["run-4"])
    assert (kept.profile_id, kept.duration_ms) == (history.gamma, 1.5)
    newest_first = read_model.list_executions().items
    assert [row.run_id for row in newest_first] == ["run-4", "run-1"]
    assert [row.run_id for row in read_model.list_executions(run_id="run-1").items] == ["run-1"]


def test_an_execution_spec_is_the_spec_of_the_version_it_ran(ledger, read_model, history):
    spec = read_model.execution_spec(history.executions["run-1"])
    version = ledger.get_profile(history.alpha, version=spec.profile_version)
    assert (spec.profile_id, spec.profile_version, spec.seed, spec.entity_count) == (history.alpha, 4, 7, 10)
    assert (spec.model_id, spec.sae_id, spec.layer) == (version.model_id, version.sae_id, version.layer)
    assert spec.steering == {1: 0.7, 5: 0.1}  # keyed by feature index, as the domain keys it
    assert read_model.execution_spec(history.executions["run-2"]) is None


def test_a_run_id_leads_to_the_profile_it_ran(read_model, history):
    found = read_model.profile_for_run("run-1")
    assert (found.profile_id, found.profile_version, found.execution_id) == (
        history.alpha, 4, history.executions["run-1"]
    )
    assert read_model.profile_for_run("run-2") is None  # deleted with its profile
    assert read_model.profile_for_run("no-such-run") is None


def test_audit_is_the_whole_log_in_order(ledger, read_model, history):
    head = read_model.log_position()
    timeline = read_model.events(limit=1000).items
    notifications = ledger.recorder.select_notifications(1, 1000)
    assert [row.position for row in timeline] == [n.id for n in notifications]
    assert timeline[-1].position == head
    for row, notification in zip(timeline, notifications):
        event = ledger.mapper.to_domain_event(notification)
        assert row.event_type == type(event).__qualname__
        assert (row.originator_id, row.originator_version) == (event.originator_id, event.originator_version)
        assert (row.recorded_at, row.actor) == (event.timestamp, event.actor)
    created = timeline[0]
    assert created.event_type == "Profile.Created" and created.aggregate_type == "Profile"
    assert created.payload["steering"] == {"1": 0.5} and created.profile_id == history.alpha


def test_audit_filters_and_pages(read_model, history):
    by_alice = read_model.events(actor="alice").items
    assert [(row.event_type, row.reason, row.correlation_id) for row in by_alice] == [
        ("Profile.SpecRevised", "tune", "req-1")
    ]
    beta_rows = read_model.events(profile_id=history.beta).items
    assert beta_rows[0].event_type == "Profile.Created"
    assert [row.event_type for row in beta_rows][-2:] == ["Profile.Deleted", "ProfileName.Released"]
    assert {row.event_type for row in beta_rows} >= {"ProfileName.Claimed", "ActiveSlot.Activated"}
    deletions = read_model.events(event_type="Profile.Deleted").items
    assert {row.profile_id for row in deletions} == {history.beta, history.gamma}
    everything = read_model.events(limit=1000).items
    middle = everything[len(everything) // 2]
    assert read_model.events(since=middle.recorded_at, limit=1000).items[0].position == middle.position
    assert read_model.events(until=middle.recorded_at, limit=1000).items[-1].position < middle.position
    window = read_model.events(after_position=3, up_to_position=6).items
    assert [row.position for row in window] == [p for p in (4, 5, 6) if p in {r.position for r in everything}]
    pages, cursor = [], None
    while True:
        page = read_model.events(limit=7, cursor=cursor)
        pages.extend(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == list(everything)


def test_positions_report_what_each_read_model_applied(read_model, history):
    from projections import PROJECTION_NAMES

    head = read_model.log_position()
    assert read_model.positions() == {name: head for name in PROJECTION_NAMES}
