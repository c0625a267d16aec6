"""A profile as it stood: after one of its versions, at a moment, every version it had, and what changed between
two of them, replayed from its stream.

Replay starts from the latest snapshot on the way (the application takes one every ``LEDGER_SNAPSHOT_INTERVAL``
events of a profile), so it reads the few events after it, not the whole stream.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent

from ledger.domainmodel import PROFILE_FIELDS, Profile, event_version, same_value
from ledger.errors import ProfileNotFoundError, TamperedRecordError
from ledger.states import (
    FieldChange, ProfileDiff, ProfileState, SteeringDiff, StrengthChange, VersionEdit, VersionRecord,
)


logger = logging.getLogger(__name__)


def profile_at(
    app: Application[UUID], profile_id: UUID, *, version: int | None = None, as_of: datetime | None = None
) -> ProfileState:
    """The profile after its ``version``-th version, or as it stood at time ``as_of``: a replay up to the first
    event past the version or the time, from the last snapshot on the way."""
    try:
        snapshot, stop = _snapshot_before(app, profile_id, version, as_of)
    except TamperedRecordError as error:  # never use it: replay the stream from its first event
        logger.warning("ignoring the snapshots of %s: %s", profile_id, error.message)
        snapshot, stop = None, None
    profile = None if snapshot is None else snapshot.mutate(None)
    start = None if snapshot is None else snapshot.originator_version
    for domain_event in _events(app, profile_id, gt=start, lte=stop):
        if version is not None and event_version(domain_event) > version:
            break
        if as_of is not None and domain_event.timestamp > as_of:
            break
        profile = domain_event.mutate(profile)
    if profile is None:
        raise ProfileNotFoundError(f"profile {profile_id} did not exist at {as_of}", profile_id=str(profile_id))
    if as_of is not None and profile.deleted:  # a version of a deleted profile is history; a moment after it is not
        raise ProfileNotFoundError(f"profile {profile_id} was deleted at {profile.modified_on.isoformat()}, before "
                                   f"{as_of.isoformat()}", profile_id=str(profile_id))
    if version is not None:  # replay stopped short of it: a version the profile never reached
        profile.require_version(version)
    return ProfileState.of(profile)


def history(app: Application[UUID], profile_id: UUID) -> Iterator[VersionRecord]:
    """Every user-facing version of the profile, oldest first, each given once no later event can change it (the
    next version began, or the stream ended): a long history is never held whole. The stream is read through once
    first (each event decoded and checked, then dropped), so a damaged one raises before any version is given."""
    for _ in _events(app, profile_id):
        pass
    record: VersionRecord | None = None
    profile = None
    for domain_event in _events(app, profile_id):
        before = ProfileState.of(profile) if isinstance(domain_event, Profile.DetailsEdited) else None
        profile = domain_event.mutate(profile)
        assert profile is not None
        if record is None or profile.current_version != record.version:
            made = ProfileState.of(profile)
            if record is not None:
                yield record
            record = VersionRecord(
                state=made,
                changes=diff(record.state, made) if record is not None else None,
                version=profile.current_version,
                recorded_at=domain_event.timestamp,
                actor=domain_event.actor,
                reason=domain_event.reason,
                event_type=type(domain_event).__qualname__,  # as the read models name it: Profile.Created
                reverted_to=getattr(domain_event, "reverted_to", None),
                imported=getattr(domain_event, "imported", None),
            )
        elif before is not None:
            # Edits that keep the version change what that version's descriptive fields read, and say so.
            after = ProfileState.of(profile)
            edit = VersionEdit(recorded_at=domain_event.timestamp, actor=domain_event.actor,
                               reason=domain_event.reason, changes=diff(before, after).changes)
            record = msgspec.structs.replace(record, state=after, edits=[*record.edits, edit])
    if record is not None:
        yield record


def diff(before: ProfileState, after: ProfileState) -> ProfileDiff:
    """What changed from one version to another: fields (before and after), and steering by feature."""
    changes = [
        FieldChange(field=name, before=getattr(before, name), after=getattr(after, name))
        for name in PROFILE_FIELDS
        if name != "steering" and not same_value(name, getattr(before, name), getattr(after, name))
    ]
    old, new = before.steering, after.steering
    steering = SteeringDiff(
        added={k: new[k] for k in sorted(new.keys() - old.keys())},
        removed={k: old[k] for k in sorted(old.keys() - new.keys())},
        changed={
            k: StrengthChange(before=old[k], after=new[k]) for k in sorted(old.keys() & new.keys()) if old[k] != new[k]
        },
    )
    return ProfileDiff(
        profile_id=after.id, name=after.name, from_version=before.version, to_version=after.version, changes=changes, steering=steering
    )


class SnapshotReplay:
    """Checks that each snapshot holds what replaying its stream's events up to its version gives: a snapshot is
    signed as (stream, version, state), so one taken in another database signed with the same key verifies,
    whatever its events were there. Fed the snapshots in stream and version order, it replays each stream once."""

    def __init__(self, app: Application[UUID]) -> None:
        self.app = app
        self._stream: UUID | None = None
        self._aggregate: Any = None
        self._version = 0

    def problem(self, row: Any) -> str | None:
        if row.originator_id != self._stream:
            self._stream, self._aggregate, self._version = row.originator_id, None, 0
        for domain_event in self.app.repository.event_store.get(row.originator_id, gt=self._version,
                                                                 lte=row.originator_version):
            self._aggregate = domain_event.mutate(self._aggregate)
        self._version = row.originator_version
        stored = self.app.mapper.to_domain_event(StoredEvent(row.originator_id, row.originator_version, row.topic,
                                                             row.state))
        if self._aggregate is None or type(stored).take(self._aggregate).state != stored.state:  # type: ignore
            return "it does not hold what its stream's events give up to its version"
        return None


def _events(
    app: Application[UUID], profile_id: UUID, *, gt: int | None = None, lte: int | None = None
) -> Iterator[Any]:
    """The profile's events, all of them or those after stream version ``gt`` up to ``lte`` (each decoded when it
    is reached: replay that stops early decodes no more)."""
    events = iter(app.repository.event_store.get(profile_id, gt=gt, lte=lte))
    if gt is not None:
        return events
    first = next(events, None)
    if not isinstance(first, Profile.Created):
        raise ProfileNotFoundError(f"profile {profile_id} not found", profile_id=str(profile_id))
    return itertools.chain([first], events)


def _snapshot_before(
    app: Application[UUID], profile_id: UUID, version: int | None, as_of: datetime | None
) -> tuple[Profile.Snapshot | None, int | None]:
    """The latest snapshot that replaying up to ``version`` / ``as_of`` would pass through, and the stream version
    of the earliest one it would not (replay stops at or before it; None: none taken).

    Replay applies events while none is past the version or the time: a snapshot lies on that path when its user
    version is at most ``version`` and every event up to it was recorded by ``as_of``.
    """
    snapshots: Any = app.snapshots
    if snapshots is None:
        return None, None
    # A large profile has many snapshots, each as large as it: list their versions, and read and decode only the
    # few a binary search looks at (the snapshots on the path come first, then those past it).
    taken = snapshots.versions(profile_id)
    decoded: dict[int, Profile.Snapshot] = {}

    def opened(index: int) -> Profile.Snapshot:
        if index not in decoded:
            at = taken[index]
            stored = snapshots.stored(profile_id, gt=at - 1, lte=at)
            if not stored:  # a row that is no snapshot (its warning given): replay from the first event
                raise TamperedRecordError(f"the snapshot of {profile_id} at version {at} is no snapshot")
            decoded[index] = snapshots.opened(stored[0])
        return decoded[index]

    def on_path(index: int) -> bool:
        state = opened(index).state
        return (version is None or state["current_version"] <= version) and (
            as_of is None or state["recorded_until"] <= as_of
        )

    low = bisect.bisect_left(range(len(taken)), True, key=lambda index: not on_path(index))  # the first off it
    stop = taken[low] if low < len(taken) else None
    if low == 0:
        return None, stop
    return opened(low - 1), stop
