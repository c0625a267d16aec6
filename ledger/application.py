"""ProfileLedger: the command side.

Each command loads the aggregates it needs, runs one domain command, and saves everything it touched in one
atomic ``save``. An optimistic-concurrency conflict is retried on fresh state (the command is re-applied,
nothing is lost); a command with ``expected_version`` checks it again there, so a writer that changed the
profile first makes it :class:`StaleVersionError`, whichever came first to the database.

Every ``LEDGER_SNAPSHOT_INTERVAL``-th event of a profile's stream (default 100; ``0``: none) is followed by a
snapshot of the profile at that stream version, from which :mod:`ledger.time_travel` rebuilds the profile as it
stood at a version or a time; so is the active slot's, the one stream every activation appends to (loading it
reads the events after its last snapshot, not every activation ever made). API tokens are :mod:`ledger.tokens`.
"""

from __future__ import annotations

import contextlib

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property, partial
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, Repository, project_aggregate
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import EventStore, Mapper, PersistenceError, RecordConflictError
from eventsourcing.utils import get_topic

from ledger import exchange, time_travel, values
from ledger.idempotency import recorded_with_claim
from ledger.name_index import move_claims_to_current_keys
from ledger.chain import VerifyReport
from ledger.domainmodel import SPEC_FIELDS, ActiveSlot, Execution, Profile, ProfileName
from ledger.errors import (
    ConcurrentUpdateError,
    ExecutionNotFoundError,
    LedgerError,
    ProfileNameTakenError,
    ProfileNotActiveError,
    ProfileNotFoundError,
    StaleVersionError,
    ValidationError,
)
from ledger.settings import number_setting
from ledger.signing import CheckedSnapshotStore, SigningEventStore, SigningKeys, SigningMapper
from ledger.states import ProfileState, VersionRecord, entity_tag, showing_version
from ledger.verification import LogVerifier

if TYPE_CHECKING:
    from ledger.write_path import StreamsRead

T = TypeVar("T")

RETRY_ATTEMPTS = 200
SNAPSHOT_INTERVAL = 100
SNAPSHOT_BYTES = 8 * 1024 * 1024
"""A stream is also snapshotted once the events this process stored in it since its last snapshot pass this many
bytes: a profile of 100,000 features (1.5 MB an event) about every six events, not every hundred (a version read
or a diff replayed up to 100 such events, 150 MB of JSON, for 10 s). The count is this process's own and starts at
its start: a bound on the replay, not a schedule."""
TRACKED_STREAMS_MAX = 10_000  # streams whose bytes since their last snapshot are counted at once (else: forgotten)
SNAPSHOT_INTERVAL_ENV = "LEDGER_SNAPSHOT_INTERVAL"
SNAPSHOTTED = (Profile, ActiveSlot)  # the streams that grow without bound (an execution or a name stays short)
SNAPSHOT_TOPICS = frozenset(get_topic(aggregate.Snapshot) for aggregate in SNAPSHOTTED)

logger = logging.getLogger(__name__)

Steerable = Callable[[ProfileState], Any]
"""Raises when the steering engine could not apply a profile as given; may answer warnings (a list of text)."""


@dataclass(frozen=True)
class Outcome:
    """What a command did: the resulting state, whether anything was recorded, and the log position."""

    profile: ProfileState | None
    changed: bool
    position: int | None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExecutionOutcome:
    execution_id: UUID
    profile_id: UUID | None
    profile_version: int | None
    position: int


@contextmanager
def _snapshot_failures_ignored(aggregate_id: UUID, version: int | None) -> Iterator[None]:
    """A snapshot is a cache of what the events say, so it never fails the command that prompted it: the same
    stream version snapshotted twice (another process got there first) holds the same state, and a snapshot
    that cannot be written only leaves a longer replay."""
    try:
        yield
    except RecordConflictError:
        pass
    except PersistenceError as error:
        logger.warning("no snapshot of %s at version %s: %s", aggregate_id, version, error)


class CopiedUnderLockRepository(Repository[UUID]):
    """The library's repository, whose cached aggregates are copied while no other thread fast-forwards them: the
    library copies one after releasing the lock under which it fast-forwards it in place, so a copy taken meanwhile
    could be torn (``dictionary changed size during iteration``, or a copy missing what was just added)."""

    STRIPES = 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stripes = tuple(threading.Lock() for _ in range(self.STRIPES))

    def get(self, aggregate_id: UUID, *, version: int | None = None, **options: Any) -> Any:  # type: ignore[override]
        if self.cache is None or version is not None:
            return super().get(aggregate_id, version=version, **options)
        with self._stripes[hash(aggregate_id) % self.STRIPES]:
            return super().get(aggregate_id, **options)


class ProfileLedger(Application[UUID]):
    name = "ProfileLedger"
    is_snapshotting_enabled = True  # the snapshot store; save() decides when to take one

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        try:
            super().__init__(env=env)
        except BaseException:  # (a database away as it starts): its pool closed here, not by the garbage collector
            with contextlib.suppress(AttributeError):  # ... in one of the pool's own threads, which cannot join itself
                self.close()
            raise
        self.snapshot_interval = number_setting(self.env, SNAPSHOT_INTERVAL_ENV, SNAPSHOT_INTERVAL, minimum=0)
        self._listeners: list[Callable[[int], None]] = []
        self._name_keys_current = False
        self._unsnapshotted: dict[UUID, int] = {}  # stream → bytes this process stored in it since its snapshot

    def construct_mapper(self) -> Mapper[UUID]:
        """The library's mapper, signing every event and snapshot it stores and checking every one it reads."""
        keys = SigningKeys.from_env(self.env)
        return SigningMapper(transcoder=self.construct_transcoder(), keys=keys, cipher=self.factory.cipher(),
                             compressor=self.factory.compressor())

    def construct_event_store(self) -> EventStore[UUID]:
        """The events of each save are signed together (one signature per save), and each insert transaction
        signs the head it leaves, once it has checked that a genuine signed head covers the end it extends."""
        self.recorder.sign_head = self.mapper.keys.sign_head  # type: ignore[attr-defined]
        self.recorder.end_problem = self.mapper.keys.end_problem  # type: ignore[attr-defined]
        return SigningEventStore(mapper=self.mapper, recorder=self.recorder)

    def construct_repository(self) -> Repository[UUID]:
        library = super().construct_repository()  # as the environment configures it
        maxsize = None if library.cache is None else getattr(library.cache, "maxsize", 0)
        return CopiedUnderLockRepository(
            self.events, snapshot_store=self.snapshots, cache_maxsize=maxsize, fastforward=library.fastforward,
            fastforward_skipping=library.fastforward_skipping, deepcopy_from_cache=library.deepcopy_from_cache,
        )

    def construct_snapshot_store(self) -> EventStore[UUID]:
        """Snapshots that fail their signature check are skipped (the profile is replayed from its events)."""
        return CheckedSnapshotStore(mapper=self.mapper, recorder=self.factory.aggregate_recorder(purpose="snapshots"),
                                    topics=SNAPSHOT_TOPICS, events=self.events)

    def add_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(position)`` in this process after every successful save (e.g. to wake projections)."""
        self._listeners.append(listener)

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        with recorded_with_claim(self, objs) as objs:  # an Idempotency-Key, claimed atomically with the command
            recordings = super().save(*objs, **kwargs)
        if recordings:
            self._snapshot_streams(objs, recordings)
            for listener in self._listeners:
                listener(recordings[-1].notification.id)
        return recordings

    def take_snapshot(
        self, aggregate_id: UUID, version: int | None = None, projector_func: Any = project_aggregate
    ) -> None:
        """Record the aggregate's state at ``version`` (default: now), rebuilt from the store."""
        with _snapshot_failures_ignored(aggregate_id, version):
            super().take_snapshot(aggregate_id, version, projector_func)

    def _snapshot_streams(self, objs: tuple[Any, ...], recordings: list[Any]) -> None:
        """Snapshot each saved profile or active slot whose stream just reached a multiple of the interval, or
        :data:`SNAPSHOT_BYTES` since its last snapshot: from memory when that is its latest version (the usual
        case: one event per aggregate per save), else from the store."""
        if self.snapshot_interval <= 0 or self.snapshots is None:
            return
        saved = {obj.id: obj for obj in objs if isinstance(obj, SNAPSHOTTED)}
        for recording in recordings:
            domain_event = recording.domain_event
            aggregate = saved.get(domain_event.originator_id)
            if aggregate is None:
                continue
            stored = self._unsnapshotted.pop(aggregate.id, 0) + len(recording.notification.state)
            if domain_event.originator_version % self.snapshot_interval and stored < SNAPSHOT_BYTES:
                if len(self._unsnapshotted) >= TRACKED_STREAMS_MAX:
                    self._unsnapshotted.clear()
                self._unsnapshotted[aggregate.id] = stored
                continue
            if aggregate.version != domain_event.originator_version:
                self.take_snapshot(aggregate.id, domain_event.originator_version)
                continue
            with _snapshot_failures_ignored(aggregate.id, aggregate.version):
                self.snapshots.put([type(aggregate).Snapshot.take(aggregate)])

    # -- commands ----------------------------------------------------------------------------------
    def create_profile(self, fields: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None,
                       imported: Mapping[str, Any] | None = None) -> Outcome:
        """Record a new profile. Steering omitted → the active profile's spec is copied (seed 000); spec fields
        still missing then take ``defaults`` (the server passes the loaded model, SAE and layer: seed 000 §5.4).
        ``imported``: the provenance of the document it is imported from, recorded with it."""

        def attempt() -> Outcome:
            given = dict(fields)
            if given.get("steering") is None:
                given.update(self._active_spec_defaults(given))
            for name, value in (defaults or {}).items():
                if name in SPEC_FIELDS and given.get(name) is None and value is not None:
                    given[name] = value
            profile = Profile.create(**given, imported=imported)
            return self._commit(profile, [profile, self._claim_name(profile)])

        return retrying(attempt)

    def update_profile(
        self,
        profile_id: UUID,
        changes: Mapping[str, Any],
        *,
        bump_version: bool = True,
        expected_version: int | None = None,
        expected_revision: int | None = None,
        reverted_to: int | None = None,
        steerable: Steerable | None = None,
    ) -> Outcome:
        def attempt() -> Outcome:
            profile = self._live_profile(profile_id)
            self._check_expected(profile, expected_version, expected_revision)
            old_name = profile.name
            if not profile.revise(changes, bump_version=bump_version, reverted_to=reverted_to):
                return Outcome(ProfileState.of(profile), changed=False, position=None)
            touched: list[Aggregate] = [profile]
            if values.name_key(profile.name) != values.name_key(old_name):
                new_index = self._claim_name(profile)
                old_index = self._name_index(old_name)
                old_index.release(profile.id)
                touched += [new_index, old_index]
            return self._commit(profile, touched, unchanged=self._kept_steerable(profile, steerable))

        return retrying(attempt)

    def revert_profile(self, profile_id: UUID, version: int, *, steerable: Steerable | None = None,
                       **expected: int | None) -> Outcome:
        """Make a new version whose content equals version ``version`` (history is never rewritten), recording which
        version it reverted to; the name stays the profile's now (a revert undoes no rename, and needs no name back
        that another profile took)."""
        target = self.get_profile(profile_id, version=version)
        content = {name: value for name, value in target.fields().items() if name != "name"}
        return self.update_profile(profile_id, content, reverted_to=target.version, steerable=steerable, **expected)

    def delete_profile(
        self, profile_id: UUID, *, delete_executions: bool = False, expected_version: int | None = None,
        expected_revision: int | None = None,
    ) -> Outcome:
        def attempt() -> Outcome:
            profile = self._live_profile(profile_id)
            self._check_expected(profile, expected_version, expected_revision)
            profile.delete(delete_executions=delete_executions)
            index = self._name_index(profile.name)
            index.release(profile.id)
            return self._commit(profile, [profile, index])

        return retrying(attempt)

    def restore_profile(self, profile_id: UUID) -> Outcome:
        """Bring a deleted profile back under its name (refused while another live profile holds that name);
        its versions and executions are as they were."""

        def attempt() -> Outcome:
            profile = self._profile(profile_id)
            profile.restore()
            return self._commit(profile, [profile, self._claim_name(profile)])

        return retrying(attempt)

    def activate_profile(self, profile_id: UUID, *, version: int | None = None,
                         steerable: Steerable | None = None, expected_version: int | None = None,
                         expected_revision: int | None = None) -> Outcome:
        """Point the active slot at a profile: following its latest version, or pinned to ``version``; the
        expected version and revision, where given, are the profile's now (else nothing changes).
        ``steerable`` sees the version that comes into force (its warnings are the outcome's); the save writes the
        profile's stream, so a change of the profile committed meanwhile makes it look again."""

        def attempt() -> Outcome:
            slot = self._slot()
            profile = self._live_profile(profile_id)
            self._check_expected(profile, expected_version, expected_revision)
            in_force = ProfileState.of(profile) if version is None else self.get_profile(profile_id, version=version)
            warnings = tuple(steerable(in_force) or ()) if steerable is not None else ()
            previous_id = slot.profile_id
            if not slot.activate(profile, version):
                return Outcome(ProfileState.of(profile), changed=False, position=None, warnings=warnings)
            touched: list[Aggregate] = [slot]
            if previous_id is not None and previous_id != profile.id:
                previous = self.repository.get(previous_id)
                previous.mark_deactivated()
                touched.append(previous)
            profile.mark_activated(version)
            touched.append(profile)
            return dataclasses.replace(self._commit(profile, touched), warnings=warnings)

        return retrying(attempt)

    def deactivate_profile(self, only: UUID | None = None) -> Outcome:
        """Leave no profile active; ``only``: when that profile is the active one (else :class:`ProfileNotActiveError`,
        nothing changed: a page showing it active was stale)."""

        def attempt() -> Outcome:
            slot = self._slot()
            if only is not None and slot.profile_id != only:
                raise ProfileNotActiveError(f"profile {only} is not the active profile (any more): nothing was "
                                            "deactivated", profile_id=str(only))
            previous_id = slot.deactivate()
            if previous_id is None:
                return Outcome(None, changed=False, position=None)
            previous = self.repository.get(previous_id)
            previous.mark_deactivated()
            return self._commit(previous, [slot, previous])

        return retrying(attempt)

    def record_execution(self, profile_id: UUID | None, **details: Any) -> ExecutionOutcome:
        """Record a run of a profile version (``profile_id`` None: a generation with no profile). The profile must
        still be as it was read when the execution is inserted: one deleted meanwhile (its executions with it)
        gets none recorded after its delete; the command runs again, and finds it deleted."""

        def attempt() -> ExecutionOutcome:
            profile = self._live_profile(profile_id) if profile_id is not None else None
            execution = Execution.record(profile, **details)
            recordings = self.save(execution, unchanged=[(profile.id, profile.version)] if profile else None)
            return ExecutionOutcome(
                execution_id=execution.id,
                profile_id=execution.profile_id,
                profile_version=execution.profile_version,
                position=recordings[-1].notification.id,
            )

        return retrying(attempt)

    def import_profile(self, document: Any, *, rename: bool = False) -> Outcome:
        """Create a profile from an exchange document; a clashing name is refused unless ``rename``."""
        fields, imported = exchange.parse_document(document), exchange.provenance(document)
        name = fields["name"]
        for _ in range(RETRY_ATTEMPTS):
            try:
                return self.create_profile({**fields, "name": name}, imported=imported)
            except ProfileNameTakenError:
                if not rename:
                    raise
            name = self._free_import_name(fields["name"])  # (another import may take it first: then look again)
        raise ProfileNameTakenError(f"no free name found for {fields['name']!r}", name=fields["name"])

    def _free_import_name(self, name: str) -> str:
        """An alternative for a clashing imported name that no live profile holds, in a few lookups however many
        copies there are: doubling to a free one, then halving back (the first alternatives are the ones taken)."""
        def free(attempt: int) -> bool:
            return self.find_profile(exchange.renamed(name, attempt)) is None

        taken, untaken = 0, 1  # 0: the name itself
        while not free(untaken):
            taken, untaken = untaken, untaken * 2
        while untaken - taken > 1:
            middle = (taken + untaken) // 2
            taken, untaken = (taken, middle) if free(middle) else (middle, untaken)
        return exchange.renamed(name, untaken)

    # -- queries (one stream each) -----------------------------------------------------------------
    def get_profile(
        self, profile_id: UUID, *, version: int | None = None, as_of: datetime | None = None
    ) -> ProfileState:
        """The profile now, after its ``version``-th version, or as it stood at time ``as_of``."""
        if version is None and as_of is None:
            return ProfileState.of(self._live_profile(profile_id))
        return time_travel.profile_at(self, profile_id, version=version, as_of=as_of)

    def diff_versions(
        self, profile_id: UUID, *, from_version: int | None = None, to_version: int | None = None
    ) -> time_travel.ProfileDiff:
        """What changed between two versions (default: the latest, and the one before ``to_version``); a deleted
        profile's versions are history, and its latest is the one it was deleted at."""
        after = self.get_profile(profile_id, version=to_version or self._profile(profile_id).current_version)
        before = self.get_profile(profile_id, version=from_version or max(after.version - 1, 1))
        return time_travel.diff(before, after)

    def profile_history(self, profile_id: UUID) -> list[VersionRecord]:
        """Every user-facing version of the profile, oldest first."""
        return list(self.replayed_history(profile_id))

    def replayed_history(self, profile_id: UUID) -> Iterator[VersionRecord]:
        """:meth:`profile_history` a version at a time, as it is replayed: a long one is never held whole. Its
        stream is read through once first, so a damaged one raises before the first version is given."""
        return time_travel.history(self, profile_id)

    def find_profile(self, name: str) -> UUID | None:
        """The live profile holding ``name`` (compared trimmed and case-insensitively), from the name index."""
        self._current_name_keys()
        try:
            index_id = ProfileName.id_for(values.display_name(name))
        except ValidationError:  # a name no profile may have: none has it
            return None
        index = self.find_aggregate(index_id)
        return None if index is None else index.profile_id

    def resolve_profile(self, reference: str | UUID, *, as_of: datetime | None = None) -> UUID:
        """The profile a user names: its id, else its name (the live profile holding it, or else the profile that
        last gave it up, so that a deleted profile can be found by name to read or restore it); ``as_of``: the
        profile that held the name then (another may hold it now, after a rename or a delete)."""
        if isinstance(reference, UUID):
            return reference
        try:
            return UUID(reference)
        except (ValueError, AttributeError, TypeError):
            pass
        try:
            index_id = ProfileName.id_for(values.display_name(reference))
            if as_of is None:
                index = self.repository.get(index_id)
            else:  # the index as it stood then: its events up to the moment, as a profile is read then
                index = None
                for event in self.repository.event_store.get(index_id):
                    if event.timestamp > as_of:
                        break
                    index = event.mutate(index)
                if index is None or index.profile_id is None:
                    raise ProfileNotFoundError(f"no profile was named {reference!r} at {as_of.isoformat()}",
                                               name=reference)
        except (AggregateNotFoundError, ValidationError):  # no such name; a damaged record is not hidden as one
            index = None
        found = None if index is None else index.profile_id
        if found is None and index is not None and index.released_by is not None:
            released = self._profile(index.released_by)
            found = released.id if released.deleted and values.name_key(released.name) == index.key else None
        if found is None:
            raise ProfileNotFoundError(f"no profile is named {reference!r}", name=reference)
        return found

    def get_execution(self, execution_id: UUID) -> Execution:
        missing = ExecutionNotFoundError(f"execution {execution_id} not found", execution_id=str(execution_id))
        return self._aggregate(execution_id, Execution, missing)

    def profile_in_force(self, profile_id: UUID) -> ProfileState:
        """The profile as every read shows it: while it is active pinned to a version, that version; else its
        latest."""
        profile = self._live_profile(profile_id)
        if profile.version_in_force == profile.current_version:
            return ProfileState.of(profile)
        return showing_version(ProfileState.of(profile), self.get_profile(profile_id, version=profile.version_in_force))

    def export_profile(self, profile_id: UUID, *, version: int | None = None) -> dict[str, Any]:
        """A version's exchange document (default: the version in force, as every read shows it)."""
        state = self.profile_in_force(profile_id) if version is None else self.get_profile(profile_id, version=version)
        return exchange.export_document(state, state.version)

    def active_slot(self) -> ActiveSlot | None:
        return self.find_aggregate(ActiveSlot.ID)

    def find_aggregate(self, aggregate_id: UUID) -> Any:
        """The aggregate with this id, or None when nothing is recorded under it."""
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def verify_log(self, **options: Any) -> VerifyReport:
        """Walk the tamper-evident chain and the signatures (:meth:`LogVerifier.verify` takes ``full``,
        ``public_key``, ``checkpoint`` and ``wait``) and report the first problem."""
        return self.log_verifier.verify(**options)

    @cached_property
    def log_verifier(self) -> LogVerifier:
        """This process's verifier: it remembers the last verified head, so later walks start from there."""
        if getattr(self.recorder, "verify_chain", None) is None:
            raise LedgerError("this event store keeps no tamper-evident chain")
        snapshot_recorder = None if self.snapshots is None else self.snapshots.recorder
        return LogVerifier(self.recorder, snapshot_recorder, self.mapper.keys,  # type: ignore[attr-defined]
                           snapshot_topics=SNAPSHOT_TOPICS, snapshot_replay=partial(time_travel.SnapshotReplay, self),
                           walked=self.events.walked)  # type: ignore[attr-defined]

    # -- helpers -----------------------------------------------------------------------------------
    def _profile(self, profile_id: UUID) -> Profile:
        missing = ProfileNotFoundError(f"profile {profile_id} not found", profile_id=str(profile_id))
        return self._aggregate(profile_id, Profile, missing)

    def _aggregate(self, aggregate_id: UUID, kind: type[T], missing: LedgerError) -> T:
        """The aggregate with this id, when it is a ``kind``; else ``missing`` is raised."""
        found = self.find_aggregate(aggregate_id)
        if not isinstance(found, kind):
            raise missing
        return found

    def _live_profile(self, profile_id: UUID) -> Profile:
        profile = self._profile(profile_id)
        if profile.deleted:
            raise ProfileNotFoundError(f"profile {profile_id} has been deleted", profile_id=str(profile_id))
        return profile

    def _current_name_keys(self) -> None:
        """Once per process: claims made under an earlier name key move to the current one (ledger.name_index)."""
        if not self._name_keys_current:
            move_claims_to_current_keys(self)
            self._name_keys_current = True

    def _name_index(self, name: str) -> ProfileName:
        self._current_name_keys()
        return self.find_aggregate(ProfileName.id_for(name)) or ProfileName(key=values.name_key(name))

    def _claim_name(self, profile: Profile) -> ProfileName:
        """The index of ``profile``'s name, claimed for it; refused naming the live profile that holds the name as
        it is spelt now (a look-alike spelling may be what was asked for)."""
        index = self._name_index(profile.name)
        try:
            index.claim(profile.id, profile.name)
        except ProfileNameTakenError as taken:
            holder = self.find_aggregate(index.profile_id) if index.profile_id is not None else None
            if holder is None or holder.name == profile.name:
                raise
            raise ProfileNameTakenError(
                f"the name {profile.name!r} is taken: profile {holder.name!r} (id {holder.id}) holds it",
                **taken.details) from None
        return index

    def _slot(self) -> ActiveSlot:
        return self.active_slot() or ActiveSlot()

    def _active_spec_defaults(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Spec fields to copy from the active profile into a new one that names no steering."""
        slot = self.active_slot()
        if slot is None or slot.profile_id is None:
            return {"steering": {}}
        active = self.get_profile(slot.profile_id, version=slot.pinned_version)
        return {name: getattr(active, name) for name in SPEC_FIELDS if given.get(name) is None}

    @staticmethod
    def _check_expected(profile: Profile, expected_version: int | None, expected_revision: int | None) -> None:
        """``If-Match``: the version and the revision (the stream's version, which edits that keep the profile's
        version move too; from an ETag, or ``--expected-revision``) the caller based its change on, each checked
        when given."""
        if expected_version in (None, profile.current_version) and expected_revision in (None, profile.version):
            return
        based_on = ", ".join(f"{what} {value}" for what, value in
                             (("version", expected_version), ("revision", expected_revision)) if value is not None)
        latest = entity_tag(profile.id, profile.current_version, profile.version)
        # unchanged since a read that showed the version in force of the active profile pinned to an earlier one
        pinned_read = expected_revision == profile.version and expected_version == profile.version_in_force
        said = (f"is at version {profile.current_version}: version {expected_version}, which you read, is an earlier "
                f"one (the active profile pinned to it shows it); a change based on version "
                f"{profile.current_version} sends If-Match: {latest}" if pinned_read else
                f"has changed since {based_on} as you read it: it is at version {profile.current_version}, "
                f"revision {profile.version} (ETag {latest})")
        raise StaleVersionError(
            f"profile {profile.id} {said}",
            profile_id=str(profile.id),
            current_version=profile.current_version,
            expected_version=expected_version,
        )

    def _kept_steerable(self, profile: Profile, steerable: Steerable | None) -> StreamsRead:
        """The active profile, when it follows its latest version, steers every request: ``steerable`` refuses to
        change it into what the steering engine could not apply. What the save must find unchanged: the active slot
        as read, so that an activation committed meanwhile makes the command look again."""
        if steerable is None:
            return ()
        slot = self.active_slot()
        if slot is None:
            return [(ActiveSlot.ID, None)]  # none recorded yet
        if slot.profile_id == profile.id and slot.pinned_version is None:
            steerable(ProfileState.of(profile))
        return [(slot.id, slot.version)]

    def _commit(self, profile: Profile, touched: list[Aggregate], unchanged: StreamsRead = ()) -> Outcome:
        recordings = self.save(*touched, unchanged=unchanged)
        return Outcome(ProfileState.of(profile), changed=True, position=recordings[-1].notification.id)


def retrying(attempt: Callable[[], T]) -> T:
    """Run a command; on a concurrent write to the same stream, re-run it on fresh state."""
    for attempt_number in range(RETRY_ATTEMPTS):
        try:
            return attempt()
        except RecordConflictError:
            time.sleep(random.uniform(0, 0.002 * min(attempt_number + 1, 10)))
    raise ConcurrentUpdateError("too much contention; try again")
