"""``/api/profiles``: the profile resource, its commands and its queries."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from ledger.api.active import active_body, in_force
from ledger.api.auth import requires
from ledger.api.commands import (
    COMMAND_ROUTE,
    ETAG_DOC,
    CREATED_PROFILE_HEADERS,
    PROFILE_COMMAND_ROUTE,
    position_headers,
    run_command,
)
from ledger.api.deps import (
    LOOKUP,
    QUERY,
    Cursor,
    DocumentsMinPosition,
    parse_if_match,
    parse_time,
    reach_position,
    refuse_nul,
    requested_position,
    runtime_of,
    with_reason,
)
from ledger.api.errors import CONFLICT, INVALID, NOT_FOUND, STALE, TIMEOUT, TOO_LARGE, responses
from ledger.api.schemas import (
    ActivateProfile,
    CreateProfile,
    Deactivation,
    DeactivateProfile,
    ProfileActivation,
    ProfileChange,
    ProfileDeletion,
    ProfileList,
    ProfileRead,
    RestoreProfile,
    RevertProfile,
    UpdateProfile,
)
from ledger.api.references import ProfileRef, profile_not_found
from ledger.application import Outcome, ProfileLedger, Steerable
from ledger.domainmodel import PROFILE_FIELDS, SPEC_FIELDS, CommandContext
from ledger.errors import NoActiveProfileError, ProfileNotFoundError
from ledger.states import convert, entity_tag
from ledger.time_travel import ProfileDiff
from ledger.values import INT64_MAX
from projections.profiles import SEARCH_HELP

IfMatch = Annotated[
    str | None,
    HeaderParameter(name="If-Match", description="The ETag the change is based on (or a bare version); 412 when stale."),
]
Limit = Annotated[int, QueryParameter(ge=1, le=500, description="Page size (1 to 500).")]


def with_etag(profile: Any, body: ProfileRead | None = None) -> Response[ProfileRead]:
    """A profile (a read-model row or a state) as it is read (or as ``body`` shows it), with the ETag of the version
    it shows: a change based on the active profile's pinned version, where the profile has moved past it, is then
    stale (412) rather than an overwrite of versions its client never saw."""
    shown = body or convert(profile, ProfileRead)
    return Response(shown, headers={"ETag": entity_tag(profile.id, shown.version, profile.revision)})


def shown(reads: Any, row: Any) -> ProfileRead:
    """A read-model row as every query shows it: the active profile with the version in force."""
    return active_body(reads, row, row.pinned_version) if row.is_active else convert(row, ProfileRead)


def position_of(outcome: Outcome, ledger: ProfileLedger) -> int:
    """The log position of the command's last event; the log's head when it recorded none."""
    return outcome.position if outcome.position is not None else int(ledger.recorder.max_notification_id() or 0)


def change_response(
    outcome: Outcome, ledger: ProfileLedger, reads: Any, status: int = HTTP_200_OK
) -> Response[ProfileChange]:
    """A command's answer: the profile as the command left it (usage counts from the read model's row, if any), and
    the active profile as every read shows it: the version in force, ``pinned`` and ``latest_version`` (a change of
    the active profile pinned to an earlier version made a version not in force)."""
    state = outcome.profile
    assert state is not None
    try:
        row = reads.get_profile(state.id)
    except Exception:  # the row only adds usage counts to a command's answer
        row = None
    counts = {} if row is None else {"execution_count": row.execution_count, "last_executed_at": row.last_executed_at}
    position = position_of(outcome, ledger)
    change = convert(state, ProfileChange, position=position, changed=outcome.changed, **counts)
    if state.is_active:
        pinned = state.pinned_version
        change = in_force(change, pinned, ledger.get_profile(state.id, version=pinned) if pinned else None)
    headers = {**position_headers(position), "ETag": entity_tag(state.id, change.version, state.revision)}
    if status == HTTP_201_CREATED:
        headers["Location"] = f"/api/profiles/{state.id}"
    return Response(change, status_code=status, headers=headers)


def profile_command(
    ledger: ProfileLedger, runtime: Any, context: CommandContext, body: Any, command: Callable[[], Outcome],
    status: int = HTTP_200_OK,
) -> Response[ProfileChange]:
    """Run a command on a profile (a reason in the body overrides ``X-Reason``): the profile as it left it."""
    return change_response(run_command(with_reason(context, body), command), ledger, runtime.read_model, status)


def steerable(runtime: Any, changes: Mapping[str, Any] | None = None) -> Steerable | None:
    """What a command passes the ledger so that the active profile, when it follows its latest version (it steers
    every request), is never changed into one the loaded engine cannot apply: 422 ``profile_incompatible``, as
    activating it would be, rather than failing every generation after it. ``changes``: an update's; one that
    changes no spec field needs no check."""
    if changes is not None and not any(name in changes for name in SPEC_FIELDS):
        return None
    return runtime.check_compatibility


def loaded_target(runtime: Any) -> dict[str, Any]:
    """What the server has loaded (model id, SAE id and its layer): recorded on a profile created without them."""
    if runtime.steering is None:
        return {}
    engine = runtime.steering.engine
    return {"model_id": engine.model_id, "sae_id": engine.sae_id, "layer": getattr(engine.sae, "layer", None)}


class ProfileController(Controller):
    path = "/api/profiles"
    tags = ["profiles"]

    # -- queries -----------------------------------------------------------------------------------
    @get("/", summary="List profiles", **QUERY)
    def list_profiles(
        self,
        reads: NamedDependency[Any],
        tag: Annotated[list[str] | None, QueryParameter(description="Filter by tag (repeatable).")] = None,
        tags_match: Annotated[Literal["any", "all"], QueryParameter(description="Match any or all tags.")] = "any",
        product: Annotated[list[str] | None, QueryParameter(
            description="Filter by product (repeatable: any of them).")] = None,
        search: Annotated[str | None, QueryParameter(description=SEARCH_HELP)] = None,
        sort: Annotated[
            Literal["name", "updated"], QueryParameter(description="`name` A→Z or `updated` newest first.")
        ] = "name",
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> ProfileList:
        refuse_nul(tag=tag, product=product, search=search)
        with reads.snapshot():  # the rows' is_active and active_profile_id of one moment
            page = reads.list_profiles(
                tags=tag or None,
                tags_match=tags_match,
                products=product,
                search=search,
                sort="updated_at" if sort == "updated" else "name",
                limit=limit,
                cursor=cursor,
            )
            active = reads.active_profile()
            return ProfileList(
                profiles=[shown(reads, row) for row in page.items],
                active_profile_id=active.profile_id if active is not None else None,
                next_cursor=page.next_cursor,
            )

    @get(
        "/active",
        summary="The active profile, showing the version in force (`pinned`, `latest_version`)",
        responses=responses(NOT_FOUND, INVALID, TIMEOUT),
        response_headers=[ETAG_DOC],
        operation_class=DocumentsMinPosition,
    )
    async def get_active(self, request: Request[Any, Any, Any]) -> Response[ProfileRead]:
        # answered from memory, encoded once per log position (see ledger.api.active); no dependencies and no
        # declared parameters: Litestar's resolving and parsing of them cost more than the rest of the route
        runtime = runtime_of(request.app.state)
        wanted = requested_position(request)
        response = await runtime.active.response(await reach_position(runtime, wanted, None) if wanted else None)
        if response is None:
            raise NoActiveProfileError("no profile is active; activate one with POST /api/profiles/{id}/activate")
        return response

    @get("/{profile_id:str}", summary="One profile, now or as it stood at a time (`as_of`)",
         response_headers=[ETAG_DOC], **LOOKUP)
    def get_profile(
        self,
        profile_id: ProfileRef,
        reads: NamedDependency[Any],
        ledger: NamedDependency[ProfileLedger],
        as_of: Annotated[
            str | None, QueryParameter(description="ISO 8601 time: the profile as it stood then.")
        ] = None,
    ) -> Response[ProfileRead]:
        moment = parse_time(as_of, "as_of")
        pid = ledger.resolve_profile(profile_id, as_of=moment)  # a name: the profile that held it then
        if moment is None:
            row = reads.get_profile(pid)
            if row is None:
                ledger.get_profile(pid)  # one deleted is refused as the commands refuse it: "has been deleted"
                raise profile_not_found(pid)
            return with_etag(row, shown(reads, row))
        state = ledger.get_profile(pid, as_of=moment)
        then = convert(state, ProfileRead, **msgspec.structs.asdict(reads.usage_until(pid, moment)))  # executed by then
        if not state.is_active:
            return with_etag(state, then)
        pinned = state.pinned_version
        return with_etag(state, in_force(then, pinned, ledger.get_profile(pid, version=pinned) if pinned else None))

    @get("/by-name/{name:path}", summary="One profile by its name", response_headers=[ETAG_DOC], **LOOKUP)
    def get_by_name(self, name: FromPath[str], reads: NamedDependency[Any]) -> Response[ProfileRead]:
        wanted = name.removeprefix("/")
        row = reads.get_profile_by_name(wanted)
        if row is None:
            raise ProfileNotFoundError(f"no profile is named {wanted!r}", name=wanted)
        return with_etag(row, shown(reads, row))

    @get(
        "/{profile_id:str}/diff",
        summary="Field-by-field differences between two versions",
        sync_to_thread=True,
        responses=responses(NOT_FOUND, INVALID),
    )
    def diff_versions(
        self,
        profile_id: ProfileRef,
        ledger: NamedDependency[ProfileLedger],
        from_version: Annotated[
            int | None, QueryParameter(name="from", ge=1, le=INT64_MAX, description="Default: the version before `to`.")
        ] = None,
        to_version: Annotated[int | None, QueryParameter(name="to", ge=1, le=INT64_MAX, description="Default: the latest.")] = None,
    ) -> ProfileDiff:
        return ledger.diff_versions(ledger.resolve_profile(profile_id), from_version=from_version, to_version=to_version)

    # -- commands ----------------------------------------------------------------------------------
    @post(
        "/",
        summary="Create a profile",
        sync_to_thread=True,
        response_headers=CREATED_PROFILE_HEADERS,
        status_code=HTTP_201_CREATED,
        responses=responses(CONFLICT, INVALID, TOO_LARGE),
    )
    def create_profile(
        self,
        data: JSONBody[CreateProfile],
        ledger: NamedDependency[ProfileLedger],
        context: NamedDependency[CommandContext],
        runtime: NamedDependency[Any],
    ) -> Response[ProfileChange]:
        fields = {name: getattr(data, name) for name in PROFILE_FIELDS}
        loaded = loaded_target(runtime)
        return profile_command(ledger, runtime, context, data, lambda: ledger.create_profile(fields, defaults=loaded),
                               HTTP_201_CREATED)

    @put("/{profile_id:str}", summary="Change some fields of a profile", **PROFILE_COMMAND_ROUTE,
         responses=responses(NOT_FOUND, CONFLICT, STALE, INVALID, TOO_LARGE))
    def update_profile(
        self,
        profile_id: ProfileRef,
        data: JSONBody[UpdateProfile],
        ledger: NamedDependency[ProfileLedger],
        context: NamedDependency[CommandContext],
        runtime: NamedDependency[Any],
        if_match: IfMatch = None,
    ) -> Response[ProfileChange]:
        pid, changes = ledger.resolve_profile(profile_id), data.changes(PROFILE_FIELDS)
        return profile_command(ledger, runtime, context, data, lambda: ledger.update_profile(
            pid, changes, bump_version=data.bump_version is not False, steerable=steerable(runtime, changes),
            **parse_if_match(if_match, pid)))

    @delete("/{profile_id:str}", summary="Delete a profile (its history stays in the log)", opt=requires("admin"),
            **COMMAND_ROUTE, responses=responses(NOT_FOUND, CONFLICT, STALE, INVALID))
    def delete_profile(
        self,
        profile_id: ProfileRef,
        ledger: NamedDependency[ProfileLedger],
        context: NamedDependency[CommandContext],
        delete_executions: Annotated[bool, QueryParameter(description="Also delete its executions.")] = False,
        if_match: IfMatch = None,
    ) -> Response[ProfileDeletion]:
        pid = ledger.resolve_profile(profile_id)
        outcome = run_command(context, lambda: ledger.delete_profile(
            pid, delete_executions=delete_executions, **parse_if_match(if_match, pid)))
        assert outcome.profile is not None and outcome.position is not None
        body = ProfileDeletion(deleted=True, id=pid, name=outcome.profile.name, delete_executions=delete_executions,
                               position=outcome.position)
        return Response(body, headers=position_headers(outcome.position))

    @post("/{profile_id:str}/activate", summary="Make a profile the active one (optionally pinned to a version)",
          **PROFILE_COMMAND_ROUTE, responses=responses(NOT_FOUND, STALE, INVALID, TOO_LARGE))
    def activate_profile(
        self,
        profile_id: ProfileRef,
        ledger: NamedDependency[ProfileLedger],
        context: NamedDependency[CommandContext],
        runtime: NamedDependency[Any],
        data: JSONBody[ActivateProfile | None] = None,
        if_match: IfMatch = None,
    ) -> Response[ProfileActivation]:
        pid = ledger.resolve_profile(profile_id)
        version = data.version if data is not None else None
        outcome = run_command(with_reason(context, data), lambda: ledger.activate_profile(
            pid, version=version, steerable=steerable(runtime), **parse_if_match(if_match, pid)))
        change = change_response(outcome, ledger, runtime.read_model)  # the version in force
        body = convert(change.content, ProfileActivation, pinned_version=version, warnings=list(outcome.warnings))
        return Response(body, headers=change.headers)

    @post("/deactivate", summary="Leave no profile active", **COMMAND_ROUTE, responses=responses(INVALID, TOO_LARGE))
    def deactivate_profile(
        self,
        ledger: NamedDependency[ProfileLedger],
        context: NamedDependency[CommandContext],
        data: JSONBody[DeactivateProfile | None] = None,
    ) -> Response[Deactivation]:
        outcome = run_command(with_reason(context, data), ledger.deactivate_profile)
        position = position_of(outcome, ledger)
        profile_id = outcome.profile.id if outcome.profile is not None else None
        body = Deactivation(deactivated=outcome.changed, profile_id=profile_id, position=position)
        return Response(body, headers=position_headers(position))

    @post("/{profile_id:str}/revert", summary="Make a new version equal to an earlier one", **PROFILE_COMMAND_ROUTE,
          responses=responses(NOT_FOUND, CONFLICT, STALE, INVALID, TOO_LARGE))
    def revert_profile(
        self,
        profile_id: ProfileRef,
        data: JSONBody[RevertProfile],
        ledger: NamedDependency[ProfileLedger],
        context: NamedDependency[CommandContext],
        runtime: NamedDependency[Any],
        if_match: IfMatch = None,
    ) -> Response[ProfileChange]:
        pid = ledger.resolve_profile(profile_id)
        return profile_command(ledger, runtime, context, data, lambda: ledger.revert_profile(
            pid, data.version, steerable=steerable(runtime), **parse_if_match(if_match, pid)))

    @post("/{profile_id:str}/restore", opt=requires("admin"), **PROFILE_COMMAND_ROUTE,
          summary="Bring a deleted profile back (its versions and executions intact); its name must be free",
          responses=responses(NOT_FOUND, CONFLICT, INVALID, TOO_LARGE))
    def restore_profile(
        self,
        profile_id: ProfileRef,
        ledger: NamedDependency[ProfileLedger],
        context: NamedDependency[CommandContext],
        runtime: NamedDependency[Any],
        data: JSONBody[RestoreProfile | None] = None,
    ) -> Response[ProfileChange]:
        pid = ledger.resolve_profile(profile_id)
        return profile_command(ledger, runtime, context, data, lambda: ledger.restore_profile(pid))
