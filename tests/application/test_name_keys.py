"""Names claimed under the earlier name key (trimmed, collapsed, case-folded: no NFKC, no look-alike mapping) keep
their owner when the key changes: the claim moves to the current key, so no second profile takes a name that
looks the same."""

from __future__ import annotations

import pytest

from ledger.application import ProfileLedger
from ledger.domainmodel import Profile, ProfileName
from ledger.errors import ProfileNameTakenError
from ledger.settings import Database


def _earlier_key(name: str) -> str:
    return " ".join(name.split()).casefold()


def _recorded_by_the_earlier_code(url: str, *names: str) -> list[Profile]:
    """Profiles whose names were claimed under the earlier key, as the code before this change recorded them."""
    ledger = ProfileLedger(env=Database(url).eventsourcing_env())
    profiles = []
    try:
        for name in names:
            profile = Profile.create(name=name, steering={})
            index = ProfileName(key=_earlier_key(name))  # its id is a UUIDv5 of the key it is given
            index.claim(profile.id, profile.name)
            ledger.save(profile, index)
            profiles.append(profile)
    finally:
        ledger.close()
    return profiles


def test_a_claim_under_the_earlier_key_moves_and_still_protects_the_name(database_url):
    (cyrillic,) = _recorded_by_the_earlier_code(database_url, "саlm")
    ledger = ProfileLedger(env=Database(database_url).eventsourcing_env())
    try:
        with pytest.raises(ProfileNameTakenError):
            ledger.create_profile({"name": "calm", "steering": {}})
        assert ledger.find_profile("calm") == cyrillic.id
        assert ledger.find_profile("саlm") == cyrillic.id
        ledger.delete_profile(cyrillic.id)  # releases the name under the current key
        assert ledger.create_profile({"name": "calm", "steering": {}}).changed
    finally:
        ledger.close()


def test_two_earlier_names_that_now_compare_equal_both_stay_taken(database_url):
    fullwidth, cyrillic = _recorded_by_the_earlier_code(database_url, "ｃａｌｍ", "саlm")
    ledger = ProfileLedger(env=Database(database_url).eventsourcing_env())
    try:
        assert ledger.find_profile("calm") == fullwidth.id  # the older claim wins the current key
        with pytest.raises(ProfileNameTakenError):
            ledger.create_profile({"name": "calm", "steering": {}})
        renamed = ledger.update_profile(cyrillic.id, {"name": "storm"})
        assert renamed.profile.name == "storm"
    finally:
        ledger.close()


def test_later_processes_look_only_at_names_registered_since(database_url, monkeypatch):
    _recorded_by_the_earlier_code(database_url, "ｆｉｒｓｔ")
    first = ProfileLedger(env=Database(database_url).eventsourcing_env())
    try:
        assert first.find_profile("first") is not None  # moved
    finally:
        first.close()
    (second_profile,) = _recorded_by_the_earlier_code(database_url, "ｓｅｃｏｎｄ")  # an earlier-version server
    looked_at: list[int] = []
    later = ProfileLedger(env=Database(database_url).eventsourcing_env())
    original = later.recorder.select_notifications

    def spy(start, limit, *args, **kwargs):
        looked_at.append(start)
        return original(start, limit, *args, **kwargs)

    monkeypatch.setattr(later.recorder, "select_notifications", spy)
    try:
        assert later.find_profile("second") == second_profile.id
        assert looked_at and looked_at[0] > 1
    finally:
        later.close()
