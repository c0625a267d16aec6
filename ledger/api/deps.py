"""What handlers are given: the app's runtime, the command context, and a read side that is consistent.

Commands are answered once the read models show them (:func:`read_side_reached`, through the middleware in
:mod:`ledger.api.commands`). A query handler asks for ``reads``: the read model, after it has reached the
position the client asked for (``min_position`` query parameter or ``X-Min-Position`` header), waiting at most
the configured timeout (then 504 ``projection_timeout``). A position beyond the log's head is refused at once
(422); a database that cannot be reached answers 503 ``database_unavailable``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import ParamType
from litestar.openapi.spec import OpenAPIType, Operation, Parameter, Schema
from litestar.params import HeaderParameter, QueryParameter

from ledger.api.auth import principal_of
from ledger.api.errors import INVALID, NOT_FOUND, TIMEOUT, InvalidRequestError, ProjectionTimeoutError, responses
from ledger.api.observability import correlation_id
from ledger.api.runtime import Runtime
from ledger.application import ProfileLedger
from ledger.domainmodel import CommandContext
from ledger.errors import StaleVersionError
from ledger.values import ACTOR_MAX, INT64_MAX, REASON_MAX, TimeOutOfRange, actor_name, iso_time
from projections.reading import PAGE_MAX


def runtime_of(state: State) -> Runtime:
    return state.runtime  # type: ignore[no-any-return]


def provide_ledger(state: State) -> ProfileLedger:
    ledger = runtime_of(state).ledger
    assert ledger is not None, "the app's lifespan has not started"
    return ledger


MIN_POSITION_DOC = "Answer only after the read side has reached this log position."
X_MIN_POSITION_DOC = "Same as the `min_position` query parameter."
LOG_POSITION = {"ge": 0, "le": INT64_MAX, "schema_extra": {"minimum": 0}}
"""A log position's bounds (Litestar leaves a ``ge`` of 0 out of the OpenAPI document: ``schema_extra`` says it)."""
MinPosition = Annotated[int | None, QueryParameter(**LOG_POSITION, description=MIN_POSITION_DOC)]
XMinPosition = Annotated[
    int | None, HeaderParameter(name="X-Min-Position", **LOG_POSITION, description=X_MIN_POSITION_DOC)
]
Limit = Annotated[int, QueryParameter(ge=1, le=PAGE_MAX)]
Cursor = Annotated[str | None, QueryParameter(description="`next_cursor` of the previous page.")]
QUERY: dict[str, Any] = {"sync_to_thread": True, "responses": responses(INVALID, TIMEOUT)}
"""The route options of a query of the read side (which may wait for ``min_position``)."""
LOOKUP = {**QUERY, "responses": responses(NOT_FOUND, INVALID, TIMEOUT)}
"""The route options of a query for a profile, version, execution or run (or their lists) from the read side."""


async def provide_reads(state: State, min_position: MinPosition = None, x_min_position: XMinPosition = None) -> Any:
    runtime = runtime_of(state)
    await reach_position(runtime, min_position, x_min_position)
    return runtime.read_model


async def reach_position(runtime: Runtime, min_position: int | None, x_min_position: int | None) -> int | None:
    """Wait until the read side has reached the position the request asks for; returns it (None: none asked)."""
    wanted = max((p for p in (min_position, x_min_position) if p is not None), default=None)
    progress = runtime.progress
    if wanted and wanted > progress.reached:
        await anyio.to_thread.run_sync(wait_until_applied, runtime, "the read side", progress.read, progress.wait_for,
                                       wanted)
    return wanted


def wait_until_applied(
    runtime: Runtime, what: str, applied: Callable[[], int], wait_for: Callable[[int, float], bool], wanted: int
) -> None:
    """Wait (bounded) until ``what`` (the read side, the steering hook) has applied log position ``wanted``:
    ``applied()`` is its position now (reading it may raise: the database not answering is 503), ``wait_for``
    waits. A position the log has not reached is a client error (422), not something to wait for; a wait past
    the configured timeout is 504 ``projection_timeout``."""
    timeout = runtime.options.consistency_timeout
    if applied() < wanted and runtime.ledger is not None:
        head = runtime.ledger.recorder.max_notification_id() or 0
        if wanted > head:
            raise InvalidRequestError(
                f"min_position {wanted} is beyond the last position recorded in the log ({head})",
                field="min_position",
                log_position=head,
            )
    if not wait_for(wanted, timeout):
        raise ProjectionTimeoutError(
            f"{what} did not reach position {wanted} within {timeout:g} s; retry later",
            min_position=wanted,
            timeout_s=timeout,
        )


def requested_position(request: Request[Any, Any, Any]) -> int | None:
    """``min_position`` / ``X-Min-Position`` read by hand, for a route too hot for Litestar's parameter parsing
    (which costs about as much as the rest of a cached read); validated as the declared parameters are."""
    scope = request.scope
    values: list[tuple[str, str]] = []
    if scope.get("query_string"):
        values += [("min_position", value) for value in request.query_params.getall("min_position", [])]
    values += [
        ("X-Min-Position", value.decode("latin-1")) for name, value in scope["headers"] if name == b"x-min-position"
    ]
    return max((log_position(value, name) for name, value in values), default=None)


def whole_number(text: str) -> int | None:
    """``text`` as an integer of at most 64 bits written in decimal digits (an optional leading ``-``), else None
    (also for thousands of digits, which Python refuses to convert)."""
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit() and len(digits) <= len(str(INT64_MAX))):
        return None
    number = int(text)
    return number if -INT64_MAX <= number <= INT64_MAX else None


def log_position(value: str, name: str) -> int:
    """A log position given as text (a query parameter or header read by hand)."""
    position = whole_number(value.strip())
    if position is None or position < 0:
        raise InvalidRequestError(f"{name} must be a log position: an integer ≥ 0 (got {value[:40]!r})", field=name)
    return position


@dataclass
class DocumentsMinPosition(Operation):
    """The OpenAPI operation of a route that reads ``min_position`` / ``X-Min-Position`` by hand
    (:func:`requested_position`): documents them as the declared parameters would be."""

    def __post_init__(self) -> None:
        schema = Schema(one_of=[Schema(type=OpenAPIType.INTEGER), Schema(type=OpenAPIType.NULL)], minimum=0,
                        maximum=INT64_MAX)
        documented = (("min_position", ParamType.QUERY, MIN_POSITION_DOC),
                      ("X-Min-Position", ParamType.HEADER, X_MIN_POSITION_DOC))
        self.parameters = [*(self.parameters or []), *(
            Parameter(name=name, param_in=where, required=False, description=text, schema=schema)
            for name, where, text in documented)]


async def read_side_reached(runtime: Runtime, position: int) -> bool:
    """Wait (without holding a thread) until every read model applied ``position``; False after the
    configured timeout."""
    progress = runtime.progress
    if position <= progress.reached:
        return True
    loop = asyncio.get_running_loop()
    reached = loop.create_future()

    def settle() -> None:
        if not reached.done():
            reached.set_result(True)

    withdraw = progress.when_reached(position, lambda: loop.call_soon_threadsafe(settle))
    try:
        return bool(await asyncio.wait_for(reached, runtime.options.consistency_timeout))
    except asyncio.TimeoutError:
        withdraw()
        return False


def provide_context(
    request: Request[Any, Any, Any],
    x_actor: Annotated[
        str | None,
        HeaderParameter(
            name="X-Actor",
            description=f"Who runs the command (UTF-8, at most {ACTOR_MAX} characters, no control or invisible "
            "characters); honoured only in open mode (with authentication on, the actor is always the token's name "
            "and this header is ignored).",
        ),
    ] = None,
    x_reason: Annotated[str | None, HeaderParameter(
        name="X-Reason", description=f"Why (UTF-8, at most {REASON_MAX} characters; recorded on the events).")] = None,
) -> CommandContext:
    principal = principal_of(request)
    if principal is not None:
        actor = principal.name
    else:
        given = header_text(x_actor, "X-Actor")
        actor = actor_name(given, "X-Actor") if given else "anonymous"
    reason = header_text(x_reason, "X-Reason") or None
    if reason is not None and len(reason) > REASON_MAX:
        raise InvalidRequestError(f"X-Reason must be at most {REASON_MAX} characters", field="X-Reason")
    return CommandContext(actor=actor, reason=reason, correlation_id=correlation_id(request.scope))


def refuse_nul(**texts: str | list[str] | None) -> None:
    """A query's text parameters (by their names on the wire) hold no NUL character, which no column can."""
    for name, value in texts.items():
        if any("\x00" in text for text in ([value] if isinstance(value, str) else value or ())):
            raise InvalidRequestError(f"{name} must not contain NUL characters", field=name)


def header_text(value: str | None, name: str) -> str:
    """A header's text, stripped: HTTP carries bytes, handed over as Latin-1, and clients send UTF-8."""
    try:
        return (value or "").encode("latin-1").decode("utf-8").strip()
    except UnicodeError:
        raise InvalidRequestError(f"{name} must be UTF-8 text", field=name) from None


def with_reason(context: CommandContext, body: Any) -> CommandContext:
    """A ``reason`` in the body, if given (its Struct bounds it to ``REASON_MAX`` characters), overrides ``X-Reason``:
    an empty one leaves the change without a reason."""
    reason: str | None = getattr(body, "reason", None)
    if reason is None:
        return context
    return replace(context, reason=reason.strip() or None)


DEPENDENCIES = {
    "ledger": Provide(provide_ledger, sync_to_thread=False),
    "runtime": Provide(runtime_of, sync_to_thread=False),
    "reads": Provide(provide_reads),
    "context": Provide(provide_context, sync_to_thread=False),
}


# -- parsing helpers -------------------------------------------------------------------------------
def parse_uuid(value: str, what: str = "id") -> UUID:
    try:
        return UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise InvalidRequestError(f"{what} must be a UUID (got {value[:80]!r})", field=what) from None


def parse_time(value: str | None, what: str) -> datetime | None:
    """An ISO 8601 time; a time without an offset is UTC; none when empty or blank."""
    if value is None or not value.strip():
        return None
    try:
        return iso_time(value)
    except TimeOutOfRange:
        raise InvalidRequestError(f"{what} must be a time between the years 1 and 9999 in UTC (got {value[:80]!r})",
                                  field=what) from None
    except ValueError:
        raise InvalidRequestError(
            f"{what} must be an ISO 8601 time such as 2025-01-31T12:00:00Z (got {value[:80]!r})", field=what
        ) from None


def parse_if_match(value: str | None, profile_id: UUID) -> dict[str, int | None]:
    """A command's ``expected_version`` and ``expected_revision`` from the ``If-Match`` header of a command on
    profile ``profile_id``: its ETag (``"3.7.<id>"``, or ``W/"3.7.<id>"``), or versions alone (``"3.7"``, a bare
    version ``"3"``); ``*`` or absent → nothing to check. One tag: a list (which would match if any of its tags
    did) is refused rather than read as its first. A tag of another profile (one whose name this profile holds
    now), an empty or a malformed tag matches nothing: 412."""
    if value is None or value.strip() == "*":
        return {}
    if "," in value:
        raise InvalidRequestError("If-Match takes one ETag (or *), not a list", field="If-Match")
    parts = value.strip().removeprefix("W/").strip().strip('"').split(".")
    version, revision = whole_number(parts[0]), whole_number(parts[1]) if len(parts) > 1 else None
    if (
        len(parts) <= 3 and version is not None and version >= 0
        and (len(parts) == 1 or revision is not None and revision >= 0)
        and (len(parts) < 3 or parts[2] == profile_id.hex)
    ):
        return {"expected_version": version, "expected_revision": revision}
    raise StaleVersionError(
        f"If-Match {value.strip()[:100]} is not an ETag of profile {profile_id} (another profile's, one this name "
        "named before, or none): read the profile again", profile_id=str(profile_id),
    )

