"""Aggregates of the ledger, their events and their invariants.

* ``Profile``     a named steering configuration with a user-facing ``version``; deleted, it can be restored
                  (a new event: its versions and executions were never gone).
* ``ProfileName`` an index aggregate whose id is derived from the normalised name: two writers claiming the
                  same name append to the same stream, so the store lets only one win.
* ``ActiveSlot``  the single "active profile" slot; every activation appends to this one stream, so two
                  concurrent activations can never both win.
* ``Execution``   one run of a profile version (its own stream: executions never contend on the profile).

Events carry who (``actor``), why (``reason``), a ``correlation_id`` and the time; the first three come from
the :data:`command_context` of the command that triggered them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from ledger import values
from ledger.errors import (
    ProfileActiveError,
    ProfileDeletedError,
    ProfileNameTakenError,
    ProfileNotDeletedError,
    ProfileVersionNotFoundError,
    SpecChangeNeedsVersionError,
    ValidationError,
)

LEDGER_NAMESPACE = uuid5(NAMESPACE_URL, "https://profile-ledger/")

SPEC_FIELDS = ("model_id", "sae_id", "layer", "steering")
DETAIL_FIELDS = ("name", "description", "tags", "products", "metadata")
PROFILE_FIELDS = (*DETAIL_FIELDS, *SPEC_FIELDS)
EXECUTION_STATUSES = ("success", "failed", "partial")


@dataclass(frozen=True)
class CommandContext:
    """Who runs a command, why, and which request it belongs to."""

    actor: str = "anonymous"
    reason: str | None = None
    correlation_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "actor", values.actor_name(self.actor))
        if self.reason is not None:
            values.reason_text(self.reason)
        if self.correlation_id is not None:
            values.text(self.correlation_id, "correlation_id")


command_context: ContextVar[CommandContext] = ContextVar("command_context", default=CommandContext())


@contextmanager
def acting_as(context: CommandContext) -> Iterator[None]:
    token = command_context.set(context)
    try:
        yield
    finally:
        command_context.reset(token)


class AuditedEvent(Aggregate.Event):
    """Base of every event in the ledger: records who, why and for which request (the time is built in)."""

    actor: str = field(default_factory=lambda: command_context.get().actor, init=False)
    reason: str | None = field(default_factory=lambda: command_context.get().reason, init=False)
    correlation_id: str | None = field(default_factory=lambda: command_context.get().correlation_id, init=False)


def canonical_value(field_name: str, value: Any) -> Any:
    """The canonical form of one profile field, validated (raises ValidationError)."""
    if field_name == "name":
        return values.profile_name(value)
    if field_name == "description":
        return values.description(value)
    if field_name in ("model_id", "sae_id"):
        return values.identifier(value, field_name)
    if field_name == "layer":
        return values.layer(value)
    if field_name == "steering":
        return values.steering(value)
    if field_name in ("tags", "products"):
        return values.labels(value, field_name)
    if field_name == "metadata":
        return values.metadata(value)
    raise ValidationError(f"unknown profile field {field_name!r}", field=field_name)


def same_value(field_name: str, old: Any, new: Any) -> bool:
    """Whether a field holds the same value. Metadata is free JSON, where ``true`` is not ``1`` and ``0.0`` not
    ``0`` or ``-0.0`` (Python's ``==`` says they are); every other field has one type."""
    if old != new:
        return False
    return field_name != "metadata" or json.dumps(old, sort_keys=True) == json.dumps(new, sort_keys=True)


def _stored(field_name: str, value: Any) -> Any:
    """How a canonical field value is written into an event (JSON primitives only)."""
    return values.steering_to_json(value) if field_name == "steering" else value


class Profile(Aggregate):
    class Event(AuditedEvent):
        pass

    class Snapshot(Aggregate.Snapshot):
        """The profile's state at one stream version; steering keeps its integer feature indices.

        JSON objects have string keys only: the state stores steering as its events do, and restores it.
        """

        @classmethod
        def take(cls, aggregate: Any) -> Profile.Snapshot:
            snapshot = super().take(aggregate)
            snapshot.state["steering"] = values.steering_to_json(snapshot.state["steering"])
            return snapshot

        def mutate(self, _: None) -> Profile:
            profile = super().mutate(_)
            assert isinstance(profile, Profile)
            profile.steering = values.steering_from_json(profile.steering)
            return profile

    pinned_version = None
    """While active: the version its activation pinned (None: it follows its latest). A class default, so that
    snapshots taken before it was kept still load."""

    @classmethod
    def create(cls, *, imported: Mapping[str, Any] | None = None, **fields: Any) -> Profile:
        """Validate every field and record the profile's first version; ``imported``: where the exchange document it
        was imported from says it came from (see :func:`ledger.exchange.provenance`)."""
        unknown = set(fields) - set(PROFILE_FIELDS)
        if unknown:
            raise ValidationError(f"unknown profile field(s): {', '.join(sorted(unknown))}", field=min(unknown))
        if "name" not in fields:
            raise ValidationError("name is required", field="name")
        canonical = {name: canonical_value(name, fields.get(name)) for name in PROFILE_FIELDS}
        stored = {name: _stored(name, value) for name, value in canonical.items()}
        return cls(**stored, imported=None if imported is None else dict(imported))

    @event("Created")
    def __init__(
        self,
        name: str,
        description: str | None,
        model_id: str | None,
        sae_id: str | None,
        layer: int | None,
        steering: dict[str, float],
        tags: list[str],
        products: list[str],
        metadata: dict[str, Any],
        imported: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.model_id = model_id
        self.sae_id = sae_id
        self.layer = layer
        self.steering = values.steering_from_json(steering)
        self.tags = list(tags)
        self.products = list(products)
        self.metadata = dict(metadata)
        self.current_version = 1
        self.is_active = False
        self.deleted = False
        self.recorded_until = self.created_on

    @property
    def modified_on(self) -> datetime:
        return self._modified_on

    @modified_on.setter
    def modified_on(self, modified_on: datetime) -> None:
        # Set as each event is applied. ``recorded_until`` is the latest time among the events so far (their
        # clocks are the writers', so a later event may read earlier): the profile as of any time at or after
        # it includes every one of them.
        self._modified_on = modified_on
        self.recorded_until = max(self.recorded_until, modified_on)

    # -- queries -----------------------------------------------------------------------------------
    @property
    def spec(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SPEC_FIELDS}

    @property
    def details(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in DETAIL_FIELDS}

    def require_live(self) -> None:
        if self.deleted:
            raise ProfileDeletedError(f"profile {self.id} has been deleted", profile_id=str(self.id))

    @property
    def version_in_force(self) -> int:
        """The version every read of it shows: the one its activation pinned while it is active, else its latest."""
        return self.pinned_version or self.current_version

    def require_version(self, version: int | None) -> int:
        """The given version if this profile has it (``None`` means the current one)."""
        if version is None:
            return self.current_version
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= self.current_version:
            raise ProfileVersionNotFoundError(
                f"profile {self.id} has no version {version} (latest is {self.current_version})",
                profile_id=str(self.id),
                version=version,
            )
        return version

    # -- commands ----------------------------------------------------------------------------------
    def revise(self, changes: Mapping[str, Any], *, bump_version: bool = True, reverted_to: int | None = None) -> bool:
        """Apply the given field changes; returns False (and records nothing) when nothing changes.

        A spec change always makes a new version; descriptive changes make one unless
        ``bump_version`` is False, in which case they are recorded against the current version. ``reverted_to``:
        the values are that version's of this profile (a revert, which the new version records), taken as they were
        recorded, even where a rule made since would refuse them as new input.
        """
        self.require_live()
        canonical = dict(changes) if reverted_to is not None else {
            name: canonical_value(name, value) for name, value in changes.items()}
        changed = {name: value for name, value in canonical.items() if not same_value(name, getattr(self, name), value)}
        spec = {name: value for name, value in changed.items() if name in SPEC_FIELDS}
        details = {name: _stored(name, value) for name, value in changed.items() if name in DETAIL_FIELDS}
        if not spec and not details:
            return False
        if spec and not bump_version:
            raise SpecChangeNeedsVersionError(
                f"changing {', '.join(sorted(spec))} makes a new version; bump_version=false is only "
                "allowed for descriptive fields (name, description, tags, products, metadata)",
                field=min(spec),
            )
        if spec:
            merged = {**self.spec, **spec}
            self._spec_revised(
                version=self.current_version + 1,
                model_id=merged["model_id"],
                sae_id=merged["sae_id"],
                layer=merged["layer"],
                steering=values.steering_to_json(merged["steering"]),
                changes=details,
                reverted_to=reverted_to,
            )
        elif bump_version:
            self._details_revised(version=self.current_version + 1, changes=details, reverted_to=reverted_to)
        else:
            self._details_edited(version=self.current_version, changes=details)
        return True

    def mark_activated(self, pinned_version: int | None) -> None:
        self.require_live()
        self._activated(version=self.current_version, pinned_version=pinned_version)

    def mark_deactivated(self) -> None:
        if self.is_active:
            self._deactivated(version=self.current_version)

    def delete(self, *, delete_executions: bool = False) -> None:
        self.require_live()
        if self.is_active:
            raise ProfileActiveError(
                f"profile {self.name!r} is active; deactivate it before deleting it", profile_id=str(self.id)
            )
        self._deleted(version=self.current_version, delete_executions=bool(delete_executions))

    def restore(self) -> None:
        """Bring a deleted profile back, as it was when deleted (at its current version, not active).

        The event carries the profile's whole state, so a read model can bring its row back from the event
        alone."""
        if not self.deleted:
            raise ProfileNotDeletedError(
                f"profile {self.name!r} is not deleted; there is nothing to restore (a deleted profile whose name "
                "a live one holds now is restored by its id)", profile_id=str(self.id)
            )
        self._restored(
            version=self.current_version,
            created_at=self.created_on,
            **{name: _stored(name, value) for name, value in {**self.details, **self.spec}.items()},
        )

    # -- events (applied on every replay: assignments only) ---------------------------------------
    @event("SpecRevised")
    def _spec_revised(
        self,
        version: int,
        model_id: str | None,
        sae_id: str | None,
        layer: int | None,
        steering: dict[str, float],
        changes: dict[str, Any],
        reverted_to: int | None = None,
    ) -> None:
        self.model_id, self.sae_id, self.layer = model_id, sae_id, layer
        self.steering = values.steering_from_json(steering)
        self._apply_details(changes)
        self.current_version = version

    @event("DetailsRevised")
    def _details_revised(self, version: int, changes: dict[str, Any], reverted_to: int | None = None) -> None:
        self._apply_details(changes)
        self.current_version = version

    @event("DetailsEdited")
    def _details_edited(self, version: int, changes: dict[str, Any]) -> None:
        self._apply_details(changes)

    @event("Activated")
    def _activated(self, version: int, pinned_version: int | None) -> None:
        self.is_active = True
        self.pinned_version = pinned_version

    @event("Deactivated")
    def _deactivated(self, version: int) -> None:
        self.is_active = False
        self.pinned_version = None

    @event("Deleted")
    def _deleted(self, version: int, delete_executions: bool) -> None:
        self.deleted = True

    @event("Restored")
    def _restored(
        self,
        version: int,
        created_at: datetime,
        name: str,
        description: str | None,
        model_id: str | None,
        sae_id: str | None,
        layer: int | None,
        steering: dict[str, float],
        tags: list[str],
        products: list[str],
        metadata: dict[str, Any],
    ) -> None:
        self.deleted = False

    def _apply_details(self, changes: Mapping[str, Any]) -> None:
        for name, value in changes.items():
            setattr(self, name, list(value) if isinstance(value, list) else value)


# Events recorded before these fields existed read None (the library keeps no defaults on its event classes).
Profile.Created.imported = Profile.SpecRevised.reverted_to = Profile.DetailsRevised.reverted_to = None


def profile_of(domain_event: Any) -> UUID | None:
    """The profile an event concerns: a profile's own, or the one an execution, the active slot or a name names."""
    if isinstance(domain_event, Profile.Event):
        return domain_event.originator_id  # type: ignore[no-any-return]
    return getattr(domain_event, "profile_id", None)


def event_version(domain_event: object) -> int:
    """The user-facing profile version a Profile event leaves the profile at."""
    return getattr(domain_event, "version", 1)


class ProfileName(Aggregate):
    """Index aggregate: holds which live profile, if any, owns a normalised name."""

    class Event(AuditedEvent):
        pass

    @staticmethod
    def create_id(key: str) -> UUID:
        return uuid5(LEDGER_NAMESPACE, f"profile-name:{key}")

    @classmethod
    def id_for(cls, name: str) -> UUID:
        return cls.create_id(values.name_key(name))

    @event("Registered")
    def __init__(self, key: str) -> None:
        self.key = key
        self.profile_id: UUID | None = None
        self.released_by: UUID | None = None  # the last profile that gave the name up (deleted or renamed)

    def claim(self, profile_id: UUID, name: str) -> None:
        if self.profile_id is not None and self.profile_id != profile_id:
            raise ProfileNameTakenError(
                f"a profile named {name!r} already exists (id {self.profile_id})", name=name, profile_id=str(self.profile_id)
            )
        if self.profile_id is None:
            self._claimed(profile_id=profile_id)

    def release(self, profile_id: UUID) -> None:
        if self.profile_id == profile_id:
            self._released(profile_id=profile_id)

    @event("Claimed")
    def _claimed(self, profile_id: UUID) -> None:
        self.profile_id = profile_id

    @event("Released")
    def _released(self, profile_id: UUID) -> None:
        self.profile_id = None
        self.released_by = profile_id


class ActiveSlot(Aggregate):
    """The one slot that names the active profile (and the version pinned, if any)."""

    class Event(AuditedEvent):
        pass

    ID = uuid5(LEDGER_NAMESPACE, "active-slot")

    @staticmethod
    def create_id() -> UUID:
        return ActiveSlot.ID

    @event("Opened")
    def __init__(self) -> None:
        self.profile_id: UUID | None = None
        self.pinned_version: int | None = None

    def activate(self, profile: Profile, pinned_version: int | None) -> bool:
        """Point the slot at ``profile``; False when it already points there with the same pin."""
        profile.require_live()
        profile.require_version(pinned_version)
        if self.profile_id == profile.id and self.pinned_version == pinned_version:
            return False
        self._activated(profile_id=profile.id, pinned_version=pinned_version, version=pinned_version or profile.current_version)
        return True

    def deactivate(self) -> UUID | None:
        """Empty the slot; returns the profile that was active (None if none was)."""
        previous = self.profile_id
        if previous is not None:
            self._deactivated(profile_id=previous)
        return previous

    @event("Activated")
    def _activated(self, profile_id: UUID, pinned_version: int | None, version: int) -> None:
        self.profile_id = profile_id
        self.pinned_version = pinned_version

    @event("Deactivated")
    def _deactivated(self, profile_id: UUID) -> None:
        self.profile_id = None
        self.pinned_version = None


DELETED_PROFILE = "deleted_profile"
"""The key of a generation's ``details`` naming the profile version it ran with (``{"id", "version"}``) when it is
recorded without its profile, which was deleted while it ran."""


class Execution(Aggregate):
    """One run of a profile version: a generation, or an external run such as a cohort generation."""

    class Event(AuditedEvent):
        pass

    @classmethod
    def record(
        cls,
        profile: Profile | None,
        *,
        version: int | None = None,
        run_id: str | None = None,
        seed: int | None = None,
        entity_count: int | None = None,
        status: str = "success",
        error_message: str | None = None,
        duration_ms: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        kind: str = "external",
        details: Mapping[str, Any] | None = None,
        replay_of: UUID | None = None,
        execution_id: UUID | None = None,
    ) -> Execution:
        """The execution's first event; ``execution_id``: its id when the caller named it before it ran (a stream's
        chunks carry it), else a new one."""
        if profile is not None:
            profile.require_live()
            profile_version: int | None = profile.require_version(
                version if version is not None else profile.version_in_force
            )
        elif version is not None:
            raise ValidationError("a version needs a profile", field="version")
        else:
            profile_version = None  # a generation run with no steering profile
        if status not in EXECUTION_STATUSES:
            raise ValidationError(
                f"status must be one of {', '.join(EXECUTION_STATUSES)} (got {status!r})", field="status"
            )
        return cls._create(
            cls.Recorded,
            id=execution_id,
            profile_id=profile.id if profile is not None else None,
            profile_version=profile_version,
            run_id=values.run_id(run_id),
            seed=values.seed(seed),
            entity_count=values.count(entity_count, "entity_count"),
            duration_ms=values.duration_ms(duration_ms),
            status=status,
            error_message=values.description(error_message, "error_message") or None,
            metadata=values.metadata(metadata),
            kind=kind,
            details=values.metadata(details, max_bytes=None) if details else {},
            replay_of=replay_of,
        )

    @event("Recorded")
    def __init__(
        self,
        profile_id: UUID | None,
        profile_version: int | None,
        run_id: str | None,
        seed: int | None,
        entity_count: int | None,
        status: str,
        error_message: str | None,
        duration_ms: float | None,
        metadata: dict[str, Any],
        kind: str,
        details: dict[str, Any],
        replay_of: UUID | None,
    ) -> None:
        self.profile_id = profile_id
        self.profile_version = profile_version
        self.run_id = run_id
        self.seed = seed
        self.entity_count = entity_count
        self.status = status
        self.error_message = error_message
        self.duration_ms = duration_ms
        self.metadata = metadata
        self.kind = kind
        self.details = details
        self.replay_of = replay_of
