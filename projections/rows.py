"""What the read side returns: frozen rows, and pages of them with the cursor of the next page.

The rows of a table are also its declaration (:class:`projections.tables.Table`): their fields are its columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

import msgspec
from msgspec import Struct

from ledger.states import ProfileFields
from projections.tables import BigInt

T = TypeVar("T")


class Page(Struct, Generic[T], frozen=True):
    items: tuple[T, ...]
    next_cursor: str | None  # None on the last page


class Usage(Struct, frozen=True):
    """How often a profile was executed, and when last."""

    execution_count: int
    last_executed_at: datetime | None


class ExecutionTime(Struct, frozen=True):
    """When a profile was executed: each execution's time, kept (with when it was deleted) when its row goes with
    its profile (``delete_executions``), so the profile as it stood before counts it still."""

    id: UUID
    position: BigInt
    profile_id: UUID
    recorded_at: datetime
    deleted_at: datetime | None


class ProfileRow(ProfileFields, frozen=True, kw_only=True):
    id: UUID
    version: int
    revision: int  # the stream version: with ``version``, the profile's ETag
    is_active: bool
    pinned_version: int | None
    execution_count: int
    last_executed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ProfileChoice(Struct, frozen=True, kw_only=True):
    """A live profile as a picker offers it: its id, name and latest version, nothing that grows with its size."""

    id: UUID
    name: str
    version: int


class VersionEntry(Struct, frozen=True, kw_only=True):
    """A version as its history lists it: who made it, how, when and why, and how many features it steers; its
    content left out (:data:`VersionRow` is the whole version)."""

    profile_id: UUID
    version: int
    feature_count: int
    event_type: str
    actor: str
    reason: str | None
    correlation_id: str | None
    recorded_at: datetime
    edited_by: str | None  # the last edit that kept this version (descriptive fields only), if any
    edit_reason: str | None
    edited_at: datetime | None
    reverted_to: int | None  # the version a revert made this one equal to
    imported: dict[str, Any] | None  # an import's first version: where its document says it came from


VersionRow = msgspec.defstruct(
    "VersionRow", [(entry.name, entry.type) for entry in msgspec.structs.fields(VersionEntry)
                   if entry.name not in ProfileFields.__struct_fields__],
    bases=(ProfileFields,), frozen=True, kw_only=True, module=__name__,
)
"""One version of a profile, whole: what it says (:class:`ledger.states.ProfileFields`) and its entry."""


class ActiveRow(Struct, frozen=True):
    profile_id: UUID
    name: str | None  # None if the profiles read model is behind
    pinned_version: int | None  # None: follows the latest version
    version: int  # the version in effect
    activated_at: datetime
    actor: str
    reason: str | None


class ExecutionRow(Struct, frozen=True):
    id: UUID
    position: BigInt
    profile_id: UUID | None
    profile_version: int | None
    run_id: str | None
    seed: BigInt | None
    entity_count: BigInt | None
    status: str
    error_message: str | None
    duration_ms: float | None
    metadata: dict[str, Any]
    kind: str
    details: dict[str, Any]
    replay_of: UUID | None
    actor: str
    reason: str | None
    correlation_id: str | None
    recorded_at: datetime


class ExecutionSpec(Struct, frozen=True):
    """Everything needed to run an execution again: the exact spec of its profile version, and its inputs."""

    execution_id: UUID
    profile_id: UUID | None  # None: a generation recorded without a profile
    profile_version: int | None
    model_id: str | None
    sae_id: str | None
    layer: int | None
    steering: dict[int, float] | None  # None: a generation run with no profile
    seed: int | None
    entity_count: int | None
    run_id: str | None
    kind: str
    details: dict[str, Any]
    metadata: dict[str, Any]


class RunProfile(Struct, frozen=True):
    """Which profile (and version) a run used: the latest execution recorded with that run id."""

    run_id: str
    profile_id: UUID | None  # None: a run with no profile
    profile_version: int | None
    execution_id: UUID
    recorded_at: datetime


class AuditRow(Struct, frozen=True):
    position: BigInt
    recorded_at: datetime
    actor: str
    event_type: str
    aggregate_type: str
    originator_id: UUID
    originator_version: int
    profile_id: UUID | None
    reason: str | None
    correlation_id: str | None
    payload: dict[str, Any]
