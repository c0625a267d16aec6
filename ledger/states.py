"""What a profile is made of, declared once, and what the application tells about one.

``ProfileFields`` are the fields of one version of a profile (the domain's ``PROFILE_FIELDS``, with the feature
count); the application's states and the API's profile and version bodies extend them. :func:`convert` builds
any of these Structs from whatever holds the fields as attributes: an aggregate, a read-model row, a Struct.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import msgspec

from ledger.domainmodel import PROFILE_FIELDS, Profile

T = TypeVar("T")


def entity_tag(profile_id: UUID, version: int, revision: int) -> str:
    """A profile's ETag: its version, its stream's (an edit that keeps the version moves it) and its id (a name
    that passes to another profile passes none of its ETags on)."""
    return f'"{version}.{revision}.{profile_id.hex}"'


class ProfileFields(msgspec.Struct, kw_only=True):
    """Everything one version of a profile says."""

    name: str
    description: str | None
    model_id: str | None
    sae_id: str | None
    layer: int | None
    steering: dict[int, float]
    """``{feature_index: strength}``."""
    feature_count: int
    tags: list[str]
    products: list[str]
    metadata: dict[str, Any]


S = TypeVar("S", bound=ProfileFields)


def showing_version(body: S, content: Any) -> S:
    """``body`` (a profile) showing the content of another of its versions (``content``: a version row or a state)
    under that version's number, as every query shows the active profile pinned to an earlier version; the name
    stays the profile's own, by which it is found."""
    fields = msgspec.structs.asdict(convert(content, ProfileFields))
    del fields["name"]
    return msgspec.structs.replace(body, **fields, version=content.version)


class ProfileState(ProfileFields, kw_only=True):
    """A profile as it stood at one point of its stream."""

    id: UUID
    version: int
    is_active: bool
    pinned_version: int | None = None  # while active: the version its activation pinned
    deleted: bool
    created_at: datetime
    updated_at: datetime
    revision: int  # the stream version

    @classmethod
    def of(cls, profile: Profile) -> ProfileState:
        return convert(
            profile, cls, version=profile.current_version, revision=profile.version, created_at=profile.created_on,
            updated_at=profile.modified_on, feature_count=len(profile.steering),
        )

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in PROFILE_FIELDS}


class FieldChange(msgspec.Struct, kw_only=True):
    field: str
    before: Any
    after: Any


class StrengthChange(msgspec.Struct, kw_only=True):
    before: float
    after: float


class SteeringDiff(msgspec.Struct, kw_only=True):
    added: dict[int, float]
    removed: dict[int, float]
    changed: dict[int, StrengthChange]


class ProfileDiff(msgspec.Struct, kw_only=True):
    profile_id: UUID
    name: str
    """The profile's name at ``to_version``."""
    from_version: int
    to_version: int
    changes: list[FieldChange]
    steering: SteeringDiff


class VersionEdit(msgspec.Struct, kw_only=True):
    """An edit that kept its version (descriptive fields only): who made it, when, why, and what it changed."""

    recorded_at: datetime
    actor: str
    reason: str | None
    changes: list[FieldChange]


class VersionRecord(msgspec.Struct, kw_only=True):
    """One user-facing version of a profile: its content and who made it, when and why."""

    state: ProfileState
    version: int
    recorded_at: datetime
    actor: str
    reason: str | None
    event_type: str
    reverted_to: int | None = None
    """The version a revert made this one equal to."""
    imported: dict[str, Any] | None = None
    """An import's first version: where its document says it came from (exported_from, exported_at,
    profile_version)."""
    changes: ProfileDiff | None = None
    """What this version's own event changed from the version before, as it stood then (None: the first)."""
    edits: list[VersionEdit] = msgspec.field(default_factory=list)
    """The edits that kept this version, oldest first: ``state`` reads as the last one left it."""

    def as_made(self) -> ProfileState:
        """The version as its own event left it, before the edits that kept it."""
        undone: dict[str, Any] = {}
        for edit in reversed(self.edits):
            undone |= {change.field: change.before for change in edit.changes}
        return msgspec.structs.replace(self.state, **undone)


class _Given:
    """``source``'s attributes, except those ``given`` names."""

    __slots__ = ("source", "given")

    def __init__(self, source: Any, given: dict[str, Any]) -> None:
        self.source, self.given = source, given

    def __getattr__(self, name: str) -> Any:
        return self.given[name] if name in self.given else getattr(self.source, name)


def convert(source: Any, into: type[T], /, **given: Any) -> T:
    """``into`` from ``source``'s attributes (``given`` ones take their place: a field named otherwise there, or
    one that comes from elsewhere); containers are copied, string feature indices become integers."""
    return msgspec.convert(_Given(source, given) if given else source, into, from_attributes=True, strict=False)
