"""ActiveSlot, ProfileName and Execution aggregates."""

from __future__ import annotations

import pytest

from ledger.domainmodel import ActiveSlot, Execution, Profile, ProfileName
from ledger.errors import ProfileDeletedError, ProfileNameTakenError, ProfileVersionNotFoundError, ValidationError


def test_names_are_compared_trimmed_and_case_insensitively():
    assert ProfileName.id_for("  My   Profile ") == ProfileName.id_for("my profile")
    assert ProfileName.id_for("a") != ProfileName.id_for("b")


def test_a_claimed_name_refuses_another_profile_until_released():
    first, second = Profile.create(name="x"), Profile.create(name="X ")
    index = ProfileName(key="x")
    index.claim(first.id, first.name)
    with pytest.raises(ProfileNameTakenError):
        index.claim(second.id, second.name)
    index.release(first.id)
    index.claim(second.id, second.name)
    assert index.profile_id == second.id


def test_the_slot_records_each_activation_once_and_knows_the_pin():
    profile = Profile.create(name="p")
    profile.revise({"description": "v2"})
    slot = ActiveSlot()
    assert slot.id == ActiveSlot.ID
    assert slot.activate(profile, None)
    assert not slot.activate(profile, None)
    assert slot.activate(profile, 1)
    assert slot.pinned_version == 1
    with pytest.raises(ProfileVersionNotFoundError):
        slot.activate(profile, 3)
    assert slot.deactivate() == profile.id
    assert slot.deactivate() is None
    assert [type(e).__name__ for e in slot.collect_events()] == ["Opened", "Activated", "Activated", "Deactivated"]


def test_an_execution_records_the_version_it_ran_against():
    profile = Profile.create(name="p")
    profile.revise({"steering": {1: 1.0}})
    execution = Execution.record(profile, run_id="cohort-1", seed=42, entity_count=1000, duration_ms=1500)
    assert execution.profile_version == 2
    assert Execution.record(profile, version=1).profile_version == 1


def test_executions_against_missing_versions_or_deleted_profiles_are_refused():
    profile = Profile.create(name="p")
    with pytest.raises(ProfileVersionNotFoundError):
        Execution.record(profile, version=2)
    with pytest.raises(ValidationError):
        Execution.record(profile, status="done")
    profile.delete()
    with pytest.raises(ProfileDeletedError):
        Execution.record(profile)
