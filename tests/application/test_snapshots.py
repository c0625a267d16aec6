"""Snapshots: a profile rebuilt from one equals the profile replayed from its first event, and time travel
answers exactly what a replay from the first event answers (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import application
from ledger.application import SNAPSHOT_INTERVAL_ENV, ProfileLedger
from ledger.states import ProfileState
from ledger.domainmodel import Profile, event_version
from ledger.errors import LedgerError, ProfileNotFoundError, ProfileVersionNotFoundError
from ledger.settings import Database

strengths = st.sampled_from([-2.0, -0.5, 0.1, 1.0, 1e-7, 3.25])
steerings = st.dictionaries(st.integers(0, 70_000), strengths, max_size=4)
labels = st.lists(st.sampled_from(["a", "b", "c"]), max_size=2, unique=True)
metadata = st.dictionaries(st.sampled_from(["x", "y"]), st.integers(-3, 3) | strengths | st.just({"n": [1, 0.5]}))
commands = st.one_of(
    st.tuples(st.just("spec"), steerings, st.sampled_from([None, 4, 12])),
    st.tuples(st.just("details"), labels, st.text("dq", max_size=3)),
    st.tuples(st.just("edit"), metadata, labels),
    st.tuples(st.just("activate"), st.none() | st.integers(1, 3), st.booleans()),
    st.tuples(st.just("deactivate"), st.none(), st.none()),
    st.tuples(st.just("delete"), st.none(), st.none()),
)


def make_ledger(url: str, interval: int) -> ProfileLedger:
    return ProfileLedger(env={**Database(url).eventsourcing_env(pool_size=4), SNAPSHOT_INTERVAL_ENV: str(interval)})


def replay(events: list, *, version: int | None = None, as_of: datetime | None = None) -> Profile | None:
    """The profile as a replay from the first event leaves it (the meaning snapshots must keep)."""
    profile = None
    for domain_event in events:
        if version is not None and event_version(domain_event) > version:
            break
        if as_of is not None and domain_event.timestamp > as_of:
            break
        profile = domain_event.mutate(profile)
    return profile


def answer(ledger: ProfileLedger, profile_id: uuid.UUID, **query: Any) -> Any:
    try:
        return ledger.get_profile(profile_id, **query)
    except LedgerError as error:
        return type(error)


def expected(events: list, **query: Any) -> Any:
    profile = replay(events, **query)
    if profile is None or query.get("as_of") is not None and profile.deleted:  # a moment after its deletion
        return ProfileNotFoundError
    if query.get("version") is not None and profile.current_version != query["version"]:
        return ProfileVersionNotFoundError
    return ProfileState.of(profile)


def state(profile: Any) -> dict[str, Any]:
    return {name: value for name, value in vars(profile).items() if name != "_pending_events"}


def run(ledger: ProfileLedger, profile_id: uuid.UUID, other_id: uuid.UUID, command: tuple) -> None:
    kind, first, second = command
    try:
        if kind == "spec":
            ledger.update_profile(profile_id, {"steering": first, "layer": second})
        elif kind == "details":
            ledger.update_profile(profile_id, {"tags": first, "description": second or None})
        elif kind == "edit":
            ledger.update_profile(profile_id, {"metadata": first, "products": second}, bump_version=False)
        elif kind == "activate":
            ledger.activate_profile(profile_id if second else other_id, version=first)
        elif kind == "deactivate":
            ledger.deactivate_profile()
        else:
            ledger.delete_profile(profile_id)
    except LedgerError:
        pass  # refused (deleted, active, no such version…): nothing recorded


def check_stream(ledger: ProfileLedger, url: str, profile_id: uuid.UUID) -> None:
    events = list(ledger.events.get(profile_id))
    snapshots = list(ledger.snapshots.get(profile_id))
    for snapshot in snapshots:
        replayed = replay(events[: snapshot.originator_version])
        assert state(snapshot.mutate(None)) == state(replayed)
    latest = events[-1]
    for version in range(0, event_version(latest) + 2):
        assert answer(ledger, profile_id, version=version) == expected(events, version=version)
    tick = timedelta(microseconds=1)
    moments = [t + d for t in (e.timestamp for e in events) for d in (-tick, timedelta(0), tick)]
    for as_of in moments:
        assert answer(ledger, profile_id, as_of=as_of) == expected(events, as_of=as_of)
    for version, as_of in zip(range(1, event_version(latest) + 1), moments[::3], strict=False):
        assert answer(ledger, profile_id, version=version, as_of=as_of) == expected(
            events, version=version, as_of=as_of
        )
    fresh = make_ledger(url, 0)  # a cold cache: the current state comes from the latest snapshot
    try:
        profile = fresh.repository.get(profile_id)
        assert state(profile) == state(replay(events))
        assert fresh.profile_history(profile_id) == ledger.profile_history(profile_id)
    finally:
        fresh.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    interval=st.sampled_from([1, 2, 3, 5]),
    steering=steerings,
    script=st.lists(commands, min_size=1, max_size=25),
)
def test_snapshots_and_time_travel_agree_with_a_full_replay(database_url, interval, steering, script):
    ledger = make_ledger(database_url, interval)
    try:
        suffix = uuid.uuid4().hex[:8]
        fields = {"name": f"p {suffix}", "steering": steering, "metadata": {"f": 0.1}}
        profile_id = ledger.create_profile(fields).profile.id
        other_id = ledger.create_profile({"name": f"o {suffix}", "steering": {}}).profile.id
        for command in script:
            run(ledger, profile_id, other_id, command)
        assert len(list(ledger.events.get(profile_id))) // interval == len(list(ledger.snapshots.get(profile_id)))
        check_stream(ledger, database_url, profile_id)
    finally:
        ledger.close()


def test_as_of_is_exact_when_a_writer_clock_steps_back(sqlite_url, monkeypatch):
    """A later event may carry an earlier time (another writer's clock): replay stops at the first event past
    ``as_of``, so a snapshot after that event must not be used for it."""
    start = datetime(2030, 1, 1, tzinfo=UTC)
    clock = iter([start + timedelta(seconds=s) for s in (0, 10, 20, 5, 6, 30, 40, 50, 60)])
    monkeypatch.setattr(Profile.Event, "create_timestamp", classmethod(lambda cls: next(clock)))
    ledger = make_ledger(sqlite_url, 2)
    profile_id = ledger.create_profile({"name": "clock", "steering": {1: 1.0}}).profile.id
    for number in range(2, 9):
        ledger.update_profile(profile_id, {"steering": {number: 1.0}})
    events = list(ledger.events.get(profile_id))
    assert [e.timestamp for e in events][3] < events[2].timestamp
    for seconds in range(-1, 62):
        as_of = start + timedelta(seconds=seconds)
        assert answer(ledger, profile_id, as_of=as_of) == expected(events, as_of=as_of)
    assert ledger.get_profile(profile_id, as_of=start + timedelta(seconds=15)).version == 2  # not 5
    ledger.close()


def test_time_travel_refuses_what_it_refused_before(database_url):
    ledger = make_ledger(database_url, 2)
    profile_id = ledger.create_profile({"name": "refusals", "steering": {1: 1.0}}).profile.id
    for number in range(2, 8):
        ledger.update_profile(profile_id, {"steering": {number: 1.0}})
    execution = ledger.record_execution(profile_id, status="success")
    with pytest.raises(ProfileVersionNotFoundError):
        ledger.get_profile(profile_id, version=8)
    with pytest.raises(ProfileNotFoundError):
        ledger.get_profile(profile_id, version=0)
    with pytest.raises(ProfileNotFoundError):
        ledger.get_profile(profile_id, as_of=datetime(2000, 1, 1, tzinfo=UTC))
    for missing in (uuid.uuid4(), execution.execution_id):
        with pytest.raises(ProfileNotFoundError):
            ledger.get_profile(missing, version=1)
    assert ledger.get_profile(profile_id, version=5).steering == {5: 1.0}
    ledger.close()


def test_a_stream_of_large_events_is_snapshotted_every_few_megabytes_not_every_hundred_events(database_url,
                                                                                               monkeypatch):
    """Events of 100,000 features (1.6 MB each): a version read replays from a snapshot a few events back."""
    monkeypatch.setattr(application, "SNAPSHOT_BYTES", 20_000)  # as 8 MiB is to 1.6 MB events: a few of these
    ledger = make_ledger(database_url, 100)
    try:
        steering = {feature: 0.5 for feature in range(300)}  # about 4 KB an event
        profile_id = ledger.create_profile({"name": "large", "steering": steering}).profile.id
        for number in range(2, 21):
            ledger.update_profile(profile_id, {"steering": {**steering, number: 1.0}})
        taken = [snapshot.originator_version for snapshot in ledger.snapshots.get(profile_id)]
        assert len(taken) >= 2 and all(later - earlier <= 10 for earlier, later in zip([0, *taken], taken)), taken
        assert ledger.snapshots.versions(profile_id) == taken  # what time travel searches, without their states
        check_stream(ledger, database_url, profile_id)  # and time travel answers as a replay from the first event
    finally:
        ledger.close()


def test_the_same_snapshot_taken_twice_is_harmless(database_url):
    """Two processes snapshotting one stream version write the same state; the second write is a no-op."""
    first, second = make_ledger(database_url, 3), make_ledger(database_url, 3)
    profile_id = first.create_profile({"name": "twice", "steering": {1: 1.0}}).profile.id
    for number in range(2, 5):
        second.update_profile(profile_id, {"steering": {number: 1.0}})
    first.take_snapshot(profile_id, version=3)
    second.take_snapshot(profile_id, version=4)
    first.take_snapshot(profile_id, version=4)
    snapshots = list(first.snapshots.get(profile_id))
    assert [s.originator_version for s in snapshots] == [3, 4]
    assert first.get_profile(profile_id) == second.get_profile(profile_id)
    assert first.get_profile(profile_id, version=3).steering == {3: 1.0}
    first.close()
    second.close()


def test_a_snapshot_that_cannot_be_written_does_not_fail_the_command(sqlite_url, monkeypatch):
    ledger = make_ledger(sqlite_url, 1)
    profile_id = ledger.create_profile({"name": "unsnapped", "steering": {1: 1.0}}).profile.id

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("the database went away")

    monkeypatch.setattr(ledger.snapshots, "put", refuse)
    outcome = ledger.update_profile(profile_id, {"steering": {2: 1.0}})
    assert outcome.changed and outcome.profile.version == 2
    assert len(list(ledger.events.get(profile_id))) == 2
    assert ledger.get_profile(profile_id, version=2).steering == {2: 1.0}
    ledger.close()


def test_the_aggregate_cache_still_follows_other_writers(database_url):
    reader, writer = make_ledger(database_url, 2), make_ledger(database_url, 2)
    profile_id = writer.create_profile({"name": "followed", "steering": {1: 1.0}}).profile.id
    assert reader.get_profile(profile_id).version == 1
    for number in range(2, 7):
        writer.update_profile(profile_id, {"steering": {number: 1.0}})
        assert reader.get_profile(profile_id).steering == {number: 1.0}
    reader.close()
    writer.close()


def test_a_save_of_several_events_snapshots_the_multiple_it_passed(database_url):
    ledger = make_ledger(database_url, 2)
    profile_id = ledger.create_profile({"name": "several", "steering": {1: 1.0}}).profile.id
    profile = ledger.repository.get(profile_id)
    profile.revise({"steering": {2: 1.0}})
    profile.revise({"steering": {3: 1.0}})
    ledger.save(profile)
    [snapshot] = ledger.snapshots.get(profile_id)
    assert snapshot.originator_version == 2
    assert state(snapshot.mutate(None)) == state(replay(list(ledger.events.get(profile_id, lte=2))))
    assert ledger.get_profile(profile_id, version=2).steering == {2: 1.0}
    ledger.close()


def test_the_active_slot_is_loaded_from_its_latest_snapshot(database_url):
    """Every activation appends to the one active slot's stream: loading it replays from its last snapshot, not
    from every activation ever made, and gives what a replay from its first event gives."""
    from ledger.domainmodel import ActiveSlot

    ledger = make_ledger(database_url, 5)
    calm = ledger.create_profile({"name": "calm", "steering": {1: 1.0}}).profile.id
    bold = ledger.create_profile({"name": "bold", "steering": {2: 1.0}}).profile.id
    for number in range(12):
        ledger.activate_profile(calm if number % 2 else bold, version=1 if number % 3 == 0 else None)
    ledger.deactivate_profile()
    versions = [snapshot.originator_version for snapshot in ledger.snapshots.get(ActiveSlot.ID)]
    assert versions and all(version % 5 == 0 for version in versions)

    fresh = make_ledger(database_url, 5)  # no aggregate cached
    read_after: list[Any] = []
    read = fresh.repository.event_store.get
    fresh.repository.event_store.get = lambda *args, **kwargs: read_after.append(kwargs.get("gt")) or read(
        *args, **kwargs)
    loaded = fresh.repository.get(ActiveSlot.ID)
    replayed = None
    for domain_event in ledger.events.get(ActiveSlot.ID):
        replayed = domain_event.mutate(replayed)
    # the snapshot's own event (to check it was taken of this log), then those after it
    assert read_after == [versions[-1] - 1, versions[-1]]
    assert (loaded.version, loaded.profile_id, loaded.pinned_version) == (
        replayed.version, replayed.profile_id, replayed.pinned_version)
    assert fresh.activate_profile(calm).changed and fresh.repository.get(ActiveSlot.ID).profile_id == calm
    ledger.close()
    fresh.close()
