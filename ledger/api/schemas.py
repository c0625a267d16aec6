"""Request and response bodies of the HTTP API: msgspec Structs, nothing else.

Requests are named like commands (``CreateProfile``) and refuse unknown fields; the bounds a field declares
(``Meta``) are the domain's (:mod:`ledger.values`), shown in the OpenAPI document and checked as the body is
read. Responses are named like things (``ProfileRead``). A field of ``UpdateProfile`` left out (``UNSET``) or
given as ``null`` stays as it is; clearing one is explicit (``""``, ``{}``, ``[]``), as each field's description
says.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import UNSET, Meta, UnsetType

from ledger import values
from ledger.states import ProfileFields
from projections.rows import AuditRow, ExecutionRow, VersionRow

JSONObject = dict[str, Any]

Reason = Annotated[str, Meta(max_length=values.REASON_MAX, description="Why (recorded on the events; overrides `X-Reason`).")]
Description = Annotated[str, Meta(max_length=values.DESCRIPTION_MAX)]
Layer = Annotated[int, Meta(ge=0, le=values.LAYER_MAX)]
Version = Annotated[int, Meta(ge=1, le=values.INT64_MAX)]
# Bounds the domain checks once a value is normalised (trimmed, NFKC): documented here, enforced there.
Name = Annotated[str, Meta(extra_json_schema={"minLength": 1, "maxLength": values.NAME_MAX})]
Identifier = Annotated[str, Meta(extra_json_schema={"maxLength": values.IDENTIFIER_MAX})]
Labels = Annotated[list[Annotated[str, Meta(extra_json_schema={"maxLength": values.LABEL_MAX})]],
                   Meta(extra_json_schema={"maxItems": values.LABELS_MAX})]
Steering = Annotated[dict[str, float], Meta(extra_json_schema={
    "propertyNames": {"pattern": "^\\s*[0-9]+\\s*$"},  # decimal digits; spaces around them are trimmed
    "description": f"`{{feature_index: strength}}`; strengths within ±{values.STRENGTH_MAX:g} by default "
                   f"(`{values.STRENGTH_MAX_ENV}`)."})]


class Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every request body: unknown fields are refused."""


# -- requests --------------------------------------------------------------------------------------
class CreateProfile(Request):
    name: Name
    description: Description | None = None
    model_id: Identifier | None = None
    sae_id: Identifier | None = None
    layer: Layer | None = None
    steering: Steering | None = None
    """``{feature_index: strength}``; omitted or null → the active profile's spec is copied."""
    tags: Labels | None = None
    products: Labels | None = None
    metadata: JSONObject | None = None
    reason: Reason | None = None


_KEEP = "Absent or `null`: left as it is."


class UpdateProfile(Request):
    """A partial update: only the fields given change. A field absent or `null` is left as it is (seed 000's
    `UpdateProfileRequest`); clearing one is explicit: `""` for a text, `{}` for steering or metadata, `[]` for
    tags or products."""

    name: Annotated[Name | None | UnsetType, Meta(description=f"A new name. {_KEEP}")] = UNSET
    description: Annotated[
        Description | None | UnsetType, Meta(description=f'A new description; `""` clears it. {_KEEP}')
    ] = UNSET
    model_id: Annotated[Identifier | None | UnsetType, Meta(description=f'The target model; `""` clears it. {_KEEP}')] = UNSET
    sae_id: Annotated[Identifier | None | UnsetType, Meta(description=f'The target SAE; `""` clears it. {_KEEP}')] = UNSET
    layer: Annotated[Layer | None | UnsetType, Meta(description=f"The layer steered. {_KEEP}")] = UNSET
    steering: Annotated[
        Steering | None | UnsetType,
        Meta(description=f"The whole new `{{feature_index: strength}}` (it replaces the old one); `{{}}` clears "
             f"it. {_KEEP}"),
    ] = UNSET
    tags: Annotated[Labels | None | UnsetType, Meta(description=f"The new tags; `[]` clears them. {_KEEP}")] = UNSET
    products: Annotated[
        Labels | None | UnsetType, Meta(description=f"The new products; `[]` clears them. {_KEEP}")
    ] = UNSET
    metadata: Annotated[
        JSONObject | None | UnsetType, Meta(description=f"The new metadata object; `{{}}` clears it. {_KEEP}")
    ] = UNSET
    bump_version: Annotated[bool | None, Meta(description="`false` keeps the version (descriptive fields only); "
                                                         "absent or `null`: `true`.")] = True
    reason: Reason | None = None

    def changes(self, fields: tuple[str, ...]) -> dict[str, Any]:
        """The fields this update names (absent and ``null`` ones left out); ``""`` clears a description."""
        named = {name: getattr(self, name) for name in fields}
        changes = {name: value for name, value in named.items() if value is not UNSET and value is not None}
        if changes.get("description") == "":
            changes["description"] = None
        return changes


class ActivateProfile(Request):
    version: Version | None = None
    """Pin this version; omitted → the active profile follows the latest version."""
    reason: Reason | None = None


class RestoreProfile(Request):
    reason: Reason | None = None


class StartRebuild(Request):
    """A rebuild takes no fields: its body, if any, is ``{}`` (a field is refused, never ignored)."""


class DeactivateProfile(Request):
    reason: Reason | None = None


class RevertProfile(Request):
    version: Version
    reason: Reason | None = None


class RecordExecution(Request):
    version: Version | None = None
    """The profile version run (default: the one in force, as every read shows it: the active profile's pinned
    version, else the latest)."""
    run_id: Identifier | None = None
    seed: Annotated[int, Meta(ge=values.INT64_MIN, le=values.INT64_MAX)] | None = None
    entity_count: Annotated[int, Meta(ge=0, le=values.INT64_MAX)] | None = None
    status: Literal["success", "failed", "partial"] = "success"
    error_message: Description | None = None
    duration_ms: Annotated[float, Meta(ge=0)] | None = None
    metadata: JSONObject | None = None
    reason: Reason | None = None


class CreateToken(Request):
    name: Name
    """Who the token is for; recorded as the actor of every change made with it (1 to 100 characters, unique
    among live tokens, no control or invisible characters)."""
    role: Literal["reader", "editor", "admin"]
    expires_in: Annotated[int, Meta(ge=1)] | None = None
    """Seconds until the token stops working; omitted: it never expires (until revoked)."""
    expires_at: datetime | None = None
    """When the token stops working (a time with an offset); give this or ``expires_in``, not both."""


# -- responses -------------------------------------------------------------------------------------
class ProfileRead(ProfileFields, kw_only=True):
    id: UUID
    version: int
    is_active: bool
    created_at: datetime
    updated_at: datetime
    execution_count: int = 0
    last_executed_at: datetime | None = None
    pinned: Annotated[bool, msgspec.Meta(description=(
        "True on the active profile when its activation pinned a version: `version` and the spec (`model_id`, "
        "`sae_id`, `layer`, `steering`) are then the version in force, and `latest_version` its newest version."
    ))] = False
    latest_version: Annotated[int | None, msgspec.Meta(description=(
        "The profile's newest version, given on the active profile only (where `version` is the version in force); "
        "null on every other profile, whose `version` is its newest."))] = None


class ProfileChange(ProfileRead, kw_only=True):
    """A profile after a command: ``position`` is the log position of the command's last event."""

    position: int
    changed: bool = True


class ProfileActivation(ProfileChange, kw_only=True):
    pinned_version: int | None = None
    warnings: list[str] = []


class ProfileList(msgspec.Struct, kw_only=True):
    profiles: list[ProfileRead]
    active_profile_id: UUID | None
    next_cursor: str | None


class ProfileDeletion(msgspec.Struct, kw_only=True):
    deleted: bool
    id: UUID
    name: str
    delete_executions: bool
    position: int


class Deactivation(msgspec.Struct, kw_only=True):
    deactivated: bool
    profile_id: UUID | None
    position: int


class VersionRead(VersionRow, kw_only=True):
    """One version of a profile: the read model's row as it is."""


class VersionList(msgspec.Struct, kw_only=True):
    versions: list[VersionRead]
    next_cursor: str | None


class ExecutionRead(ExecutionRow, kw_only=True):
    """An execution: the read model's row as it is (``position``: where the log recorded it)."""

    recorded_at: datetime = msgspec.field(name="executed_at")


class ExecutionRecorded(ExecutionRead, kw_only=True):
    """The execution a command recorded."""


class ExecutionList(msgspec.Struct, kw_only=True):
    executions: list[ExecutionRead]
    next_cursor: str | None


class RunProfile(msgspec.Struct, kw_only=True):
    """The profile a run used: the version it ran (``version``) and the profile as it is now (``profile``,
    null once deleted)."""

    run_id: str
    execution_id: UUID
    profile_id: UUID
    profile_version: int
    recorded_at: datetime
    version: VersionRead | None
    profile: ProfileRead | None


class EventRead(AuditRow, kw_only=True):
    """An event of the log: the audit read model's row as it is (``type``, ``data``: the event's own fields)."""

    event_type: str = msgspec.field(name="type")
    payload: JSONObject = msgspec.field(name="data")


class EventList(msgspec.Struct, kw_only=True):
    events: list[EventRead]
    next_cursor: str | None


class Health(msgspec.Struct, kw_only=True):
    status: str


class ProjectionStatus(msgspec.Struct, kw_only=True):
    name: str
    position: int
    lag: int
    parked: int = 0
    """Events this read model could not apply and set aside (``ledger projections`` lists them)."""


class Readiness(msgspec.Struct, kw_only=True):
    status: Literal["ready", "not_ready"]
    database: bool
    log_position: int | None
    projections: list[ProjectionStatus]
    runner_alive: bool | None
    detail: str | None = None


class TokenRead(msgspec.Struct, kw_only=True):
    """An API token as listed: never its secret."""

    token_id: UUID = msgspec.field(name="id")
    name: str
    role: str
    issued_at: str
    revoked: bool
    expires_at: str | None = None
    """When the token stops working; null: never (until revoked)."""


class TokenList(msgspec.Struct, kw_only=True):
    tokens: list[TokenRead]


class TokenIssued(TokenRead, kw_only=True):
    token: str
    """The token itself: shown this once, only a salted hash of it is stored."""


class TokenRevocation(msgspec.Struct, kw_only=True):
    id: UUID
    revoked: bool
    """True when this request revoked it; false when it was revoked already."""


class VerifyResult(msgspec.Struct, kw_only=True):
    """What walking the tamper-evident chain over the event log found."""

    ok: bool
    checked: int
    """How many positions were checked."""
    head_position: int | None
    head_link: str | None
    """The chain's last link (hex): record it elsewhere to detect a rewrite of the whole log later."""
    problem: Literal[
        "altered", "removed", "inserted", "reordered", "broken_link", "forged", "diverged", "unsigned", "truncated",
        "snapshot_forged",
    ] | None = None
    position: int | None = None
    """The first position where the log was tampered with (none for a snapshot: ``detail`` names it)."""
    detail: str | None = None
    since: int | None = None
    """An incremental walk: the positions up to this one were verified by an earlier walk of this process."""


class ExchangedProfile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One profile version as an exchange document holds it (``model``/``sae``: its ``model_id``/``sae_id``)."""

    name: str
    description: str | None
    model: str | None
    sae: str | None
    layer: int | None
    steering: dict[str, float]
    tags: list[str]
    products: list[str]
    metadata: JSONObject
    profile_version: int


class ExchangeDocument(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Seed 000's ``millm_profile`` document: what an export gives and an import takes (which also takes a flat
    profile, as miLLM exports it or this API answers it)."""

    version: str
    """The format's version, ``1.0``."""
    type: Literal["millm_profile"]
    profile: ExchangedProfile
    exported_at: str
    """ISO 8601, UTC."""
    exported_from: str


class ErrorBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The one error shape: ``error`` is a stable code, ``detail`` a human message; context fields follow, each
    where it applies."""

    error: str
    detail: str
    field: str | None = None
    profile_id: str | None = None
    name: str | None = None
    profile: str | None = None
    version: int | None = None
    current_version: int | None = None
    expected_version: int | None = None
    execution_id: str | None = None
    run_id: str | None = None
    token_id: str | None = None
    job_id: str | None = None
    required_role: str | None = None
    log_position: int | None = None
    retry_after_s: int | None = None
    errors: list[JSONObject] | None = None


class OpenAIError(msgspec.Struct, kw_only=True):
    message: str
    type: Literal["invalid_request_error", "authentication_error", "server_error"]
    param: str | None
    code: str
    """``error``: the stable code. Context fields follow, as in the ledger's own shape."""


class OpenAIErrorBody(msgspec.Struct):
    """The same error under ``/v1``, in OpenAI's shape, which its clients read."""

    error: OpenAIError
