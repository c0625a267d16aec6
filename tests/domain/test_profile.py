"""Profile aggregate: given events → when command → then events / state. No I/O."""

from __future__ import annotations

import math

import pytest

from ledger.domainmodel import CommandContext, Profile, acting_as
from ledger.errors import (
    ProfileActiveError,
    ProfileDeletedError,
    ProfileVersionNotFoundError,
    SpecChangeNeedsVersionError,
    ValidationError,
)


def new_profile(**fields) -> Profile:
    profile = Profile.create(**{"name": "calm", "steering": {1: 0.5}, **fields})
    profile.collect_events()
    return profile


def event_types(profile: Profile) -> list[str]:
    return [type(e).__name__ for e in profile.collect_events()]


def test_created_profile_starts_at_version_one_with_canonical_fields():
    profile = Profile.create(name="  Calm  ", steering={"3": 1, 1: -2.5}, tags=[" a", "a ", "b", ""])
    assert profile.name == "Calm"
    assert profile.current_version == 1
    assert profile.steering == {1: -2.5, 3: 1.0}
    assert profile.tags == ["a", "b"]
    assert event_types(profile) == ["Created"]


def test_spec_change_makes_a_new_version_with_the_full_spec():
    profile = new_profile()
    assert profile.revise({"steering": {2: 1.0}, "description": "x"})
    events = profile.collect_events()
    assert [type(e).__name__ for e in events] == ["SpecRevised"]
    assert events[0].version == 2 and events[0].steering == {"2": 1.0} and events[0].changes == {"description": "x"}
    assert profile.current_version == 2


def test_descriptive_change_bumps_by_default_and_keeps_the_version_when_asked():
    profile = new_profile()
    profile.revise({"description": "first"})
    assert profile.current_version == 2
    profile.revise({"tags": ["x"]}, bump_version=False)
    assert profile.current_version == 2
    assert event_types(profile) == ["DetailsRevised", "DetailsEdited"]


def test_spec_change_without_a_version_bump_is_refused_and_records_nothing():
    profile = new_profile()
    with pytest.raises(SpecChangeNeedsVersionError):
        profile.revise({"layer": 3, "description": "d"}, bump_version=False)
    assert event_types(profile) == []
    assert profile.current_version == 1 and profile.layer is None


def test_an_update_that_changes_nothing_records_nothing():
    profile = new_profile(description="d", tags=["a"])
    assert profile.revise({"name": " calm ", "description": "d", "steering": {"1": 0.5}, "tags": ["a", "a"]}) is False
    assert event_types(profile) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"layer": -1}, "layer"),
        ({"steering": {"a": 1.0}}, "steering.a"),
        ({"steering": {"-1": 1.0}}, "steering.-1"),
        ({"steering": {"1": math.nan}}, "steering.1"),
        ({"steering": {"1": math.inf}}, "steering.1"),
        ({"description": "x" * 10_001}, "description"),
        ({"metadata": [1]}, "metadata"),
    ],
)
def test_invalid_fields_are_refused_naming_the_field(fields, field):
    with pytest.raises(ValidationError) as error:
        Profile.create(**{"name": "ok", **fields})
    assert error.value.field == field


def test_more_than_100000_features_are_refused():
    with pytest.raises(ValidationError, match="at most 100000"):
        Profile.create(name="big", steering={i: 1.0 for i in range(100_001)})


def test_an_active_profile_cannot_be_deleted():
    profile = new_profile()
    profile.mark_activated(None)
    with pytest.raises(ProfileActiveError):
        profile.delete()
    profile.mark_deactivated()
    profile.delete(delete_executions=True)
    assert profile.deleted
    assert event_types(profile) == ["Activated", "Deactivated", "Deleted"]


def test_a_deleted_profile_refuses_further_commands():
    profile = new_profile()
    profile.delete()
    with pytest.raises(ProfileDeletedError):
        profile.revise({"description": "again"})


def test_versions_that_do_not_exist_are_refused():
    profile = new_profile()
    with pytest.raises(ProfileVersionNotFoundError):
        profile.require_version(2)
    with pytest.raises(ProfileVersionNotFoundError):
        profile.require_version(0)
    assert profile.require_version(None) == 1


def test_every_event_names_its_actor_reason_and_time():
    with acting_as(CommandContext(actor="alice", reason="tuning", correlation_id="req-1")):
        profile = Profile.create(name="p")
        profile.revise({"description": "d"})
    for domain_event in profile.collect_events():
        assert (domain_event.actor, domain_event.reason, domain_event.correlation_id) == ("alice", "tuning", "req-1")
        assert domain_event.timestamp is not None


def test_a_deleted_profile_is_restored_as_it_was_by_an_event_carrying_its_whole_state():
    from ledger.errors import ProfileNotDeletedError

    profile = new_profile(description="d", tags=["t"])
    profile.revise({"steering": {2: 1.5}})
    with pytest.raises(ProfileNotDeletedError):
        profile.restore()
    profile.delete()
    profile.collect_events()
    profile.restore()
    (restored,) = profile.collect_events()
    assert type(restored).__name__ == "Restored" and not profile.deleted
    assert (restored.version, restored.name, restored.steering, restored.tags) == (2, "calm", {"2": 1.5}, ["t"])
    assert restored.created_at == profile.created_on
    assert profile.revise({"description": "alive again"}) and profile.current_version == 3


def test_a_strength_beyond_the_bound_or_not_finite_is_refused():
    for strength in (200.5, -201, math.inf, math.nan):
        with pytest.raises(ValidationError):
            Profile.create(name="strong", steering={1: strength})
    assert Profile.create(name="edge", steering={1: 200, 2: -200}).steering == {1: 200.0, 2: -200.0}


def test_events_recorded_before_a_revert_or_an_import_said_what_from_read_as_neither():
    profile = Profile.create(name="old", steering={1: 1.0})
    profile.revise({"steering": {1: 2.0}})
    profile.revise({"tags": ["t"]})
    created, *revised = profile.collect_events()
    replayed = None
    for recorded, field in [(created, "imported"), *((event, "reverted_to") for event in revised)]:
        old = object.__new__(type(recorded))
        old.__dict__.update({key: value for key, value in vars(recorded).items() if key != field})  # as decoded
        assert getattr(old, field) is None, field
        replayed = old.mutate(replayed)
    assert (replayed.current_version, replayed.steering, replayed.tags) == (3, {1: 2.0}, ["t"])
