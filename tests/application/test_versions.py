"""Version rules through the application, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from ledger.errors import (
    ProfileNameTakenError,
    ProfileNotFoundError,
    ProfileVersionNotFoundError,
    SpecChangeNeedsVersionError,
    StaleVersionError,
    ValidationError,
)
from tests.application.conftest import log_types


def test_each_version_reads_back_exactly_as_it_was(ledger):
    created = ledger.create_profile({"name": "calm", "steering": {1: 0.5}, "tags": ["a"]})
    pid = created.profile.id
    ledger.update_profile(pid, {"steering": {1: 0.7, 9: -1.0}})  # v2
    ledger.update_profile(pid, {"description": "two"}, bump_version=False)  # still v2
    ledger.update_profile(pid, {"name": "calmer", "tags": ["a", "b"]})  # v3
    v1, v2, v3 = (ledger.get_profile(pid, version=k) for k in (1, 2, 3))
    assert (v1.steering, v1.description, v1.name, v1.version) == ({1: 0.5}, None, "calm", 1)
    assert (v2.steering, v2.description, v2.name, v2.version) == ({1: 0.7, 9: -1.0}, "two", "calm", 2)
    assert (v3.name, v3.tags, v3.version) == ("calmer", ["a", "b"], 3)
    assert ledger.get_profile(pid) == v3
    with pytest.raises(ProfileVersionNotFoundError):
        ledger.get_profile(pid, version=4)
    history = ledger.profile_history(pid)
    assert [(r.version, r.event_type) for r in history] == [
        (1, "Profile.Created"), (2, "Profile.SpecRevised"), (3, "Profile.DetailsRevised")
    ]
    assert history[1].state.description == "two"


def test_refused_and_no_op_updates_append_nothing(ledger):
    pid = ledger.create_profile({"name": "p", "steering": {}}).profile.id
    before = log_types(ledger)
    with pytest.raises(SpecChangeNeedsVersionError):
        ledger.update_profile(pid, {"layer": 4}, bump_version=False)
    outcome = ledger.update_profile(pid, {"name": " p ", "steering": {}})
    assert not outcome.changed and outcome.position is None
    assert log_types(ledger) == before


def test_expected_version_makes_staleness_explicit(ledger):
    pid = ledger.create_profile({"name": "p"}).profile.id
    ledger.update_profile(pid, {"description": "x"}, expected_version=1)
    with pytest.raises(StaleVersionError):
        ledger.update_profile(pid, {"description": "y"}, expected_version=1)


def test_as_of_replays_the_stream_to_a_moment(ledger):
    pid = ledger.create_profile({"name": "p", "description": "old"}).profile.id
    moment = datetime.now(timezone.utc)
    ledger.update_profile(pid, {"description": "new"})
    assert ledger.get_profile(pid, as_of=moment).description == "old"
    with pytest.raises(ProfileNotFoundError):
        ledger.get_profile(pid, as_of=datetime(2000, 1, 1, tzinfo=timezone.utc))


def test_revert_makes_a_new_version_equal_to_an_old_one(ledger):
    pid = ledger.create_profile({"name": "p", "steering": {1: 1.0}}).profile.id
    ledger.update_profile(pid, {"steering": {2: 2.0}, "description": "d"})
    reverted = ledger.revert_profile(pid, 1)
    assert reverted.profile.version == 3
    assert reverted.profile.fields() == ledger.get_profile(pid, version=1).fields()


def test_a_revert_restores_a_version_as_recorded_even_where_a_later_rule_refuses_it_as_new_input(ledger):
    pid = ledger.create_profile({"name": "p", "steering": {1: 1.0}}).profile.id
    ledger.update_profile(pid, {"tags": ["a\tb"]}, reverted_to=1)  # as recorded before labels refused a tab
    with pytest.raises(ValidationError):
        ledger.update_profile(pid, {"tags": ["c\td"]})  # new input: refused
    ledger.update_profile(pid, {"tags": ["ok"], "steering": {1: 2.0}})
    reverted = ledger.revert_profile(pid, 2)  # before: refused for good ("tags[0] must not contain …")
    assert reverted.profile.tags == ["a\tb"] and reverted.profile.steering == {1: 1.0}


def test_renaming_frees_the_old_name_and_takes_the_new_one(ledger):
    first = ledger.create_profile({"name": "one"}).profile.id
    ledger.create_profile({"name": "two"})
    with pytest.raises(ProfileNameTakenError):
        ledger.update_profile(first, {"name": "TWO"})
    ledger.update_profile(first, {"name": "uno"})
    ledger.create_profile({"name": "One"})  # the old name is free again


def test_create_without_steering_copies_the_active_profile_spec(ledger):
    base = ledger.create_profile({"name": "base", "model_id": "m", "sae_id": "s", "layer": 3, "steering": {5: 2.0}})
    ledger.activate_profile(base.profile.id)
    copy = ledger.create_profile({"name": "copy"}).profile
    assert (copy.model_id, copy.sae_id, copy.layer, copy.steering) == ("m", "s", 3, {5: 2.0})
    assert ledger.create_profile({"name": "empty", "steering": {}}).profile.steering == {}
