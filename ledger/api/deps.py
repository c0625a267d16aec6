"""What handlers are given: the services of the app, the command context, and a read side that is consistent.

Commands are answered once the read models show them (:func:`read_side_reached`, through the middleware in
:mod:`ledger.api.commands`). A query handler asks for ``reads``: the read model, after it has reached the
position the client asked for (``min_position`` query parameter or ``X-Min-Position`` header), waiting at most
the configured timeout (then 504 ``projection_timeout``). A position beyond the log's head is refused at once
(422); a database that cannot be reached answers 503 ``database_unavailable``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import ParamType
from litestar.openapi.spec import OpenAPIType, Operation, Parameter, Schema
from litestar.params import HeaderParameter, QueryParameter

from ledger.api.auth import TokenCache, principal_of
from ledger.api.errors import InvalidRequestError, ProjectionTimeoutError
from ledger.api.observability import Metrics, correlation_id
from ledger.application import ProfileLedger
from ledger.domainmodel import CommandContext
from ledger.settings import Database

CompatibilityCheck = Callable[[Any], list[str]]
ACTOR_MAX = 200
REASON_MAX = 1_000


def no_compatibility_warnings(profile: Any) -> list[str]:
    """The default compatibility check: no steering engine attached, nothing to warn about."""
    return []


@dataclass
class ApiOptions:
    consistency_timeout: float = 2.0
    """Seconds a query waits for the projections to reach a requested position, and a command's answer waits
    for the projections to reach the command's position (then it answers, marked ``X-Ledger-Read-Side: pending``)."""
    max_body_size: int = 2 * 1024 * 1024
    ready_max_lag: int = 0
    """/ready answers 503 while a projection is more than this many positions behind the log."""
    sse_heartbeat: float = 15.0
    sse_poll: float = 0.5
    sse_max_streams: int = 100
    """Open event streams this process serves at once; beyond, 503 with ``Retry-After``."""
    page_bytes: int = 1024 * 1024
    """A page of events stops before this many bytes of JSON (always at least one event); ``next_cursor`` goes on."""


@dataclass
class Services:
    """Everything the handlers use, built in the lifespan (or given to ``create_app``)."""

    options: ApiOptions
    metrics: Metrics
    compatibility_check: CompatibilityCheck
    ledger: ProfileLedger | None = None
    read_model: Any = None
    runner: threading.Thread | None = None
    runner_stop: threading.Event = field(default_factory=threading.Event)
    shutdown: threading.Event = field(default_factory=threading.Event)
    wake: Callable[[int], None] | None = None
    auth: bool = True
    """Whether requests must carry a bearer token (see :mod:`ledger.api.auth`)."""
    tokens: TokenCache | None = None
    database: Database | None = None
    steering: Any = None
    """The steering runtime (``ledger.api.steering_runtime``) when a model is loaded."""
    generation: Any = None
    """Its ``steering.runs.GenerationService``: generation and replay."""
    active: Any = None
    """The ``ledger.api.active.ActiveProfileCache`` that answers ``GET /api/profiles/active``."""
    progress: Any = None
    """The ``projections.progress.ReadSideProgress`` of the read model: waiting for a position."""
    rebuilds: Any = None
    """The ``ledger.api.rebuilds.RebuildJobs`` of this server."""
    notifications: Any = None
    """The process's one PostgreSQL LISTEN (``projections.wakeup.Notifications``); None on SQLite."""


def services_of(state: State) -> Services:
    return state.services  # type: ignore[no-any-return]


def provide_ledger(state: State) -> ProfileLedger:
    ledger = services_of(state).ledger
    assert ledger is not None, "the app's lifespan has not started"
    return ledger


def provide_services(state: State) -> Services:
    return services_of(state)


def provide_compatibility_check(state: State) -> CompatibilityCheck:
    return services_of(state).compatibility_check


MinPosition = Annotated[
    int | None,
    QueryParameter(ge=0, description="Answer only after the read side has reached this log position."),
]
XMinPosition = Annotated[
    int | None,
    HeaderParameter(name="X-Min-Position", ge=0, description="Same as the `min_position` query parameter."),
]


async def provide_reads(state: State, min_position: MinPosition = None, x_min_position: XMinPosition = None) -> Any:
    services = services_of(state)
    await reach_position(services, min_position, x_min_position)
    return services.read_model


async def reach_position(services: Services, min_position: int | None, x_min_position: int | None) -> int | None:
    """Wait until the read side has reached the position the request asks for; returns it (None: none asked)."""
    wanted = max((p for p in (min_position, x_min_position) if p is not None), default=None)
    if wanted and wanted > services.progress.reached:
        timeout = services.options.consistency_timeout
        reached = await anyio.to_thread.run_sync(_wait_for_recorded_position, services, wanted, timeout)
        if not reached:
            raise ProjectionTimeoutError(
                f"the read side did not reach position {wanted} within {timeout:g} s; retry later",
                min_position=wanted,
                timeout_s=timeout,
            )
    return wanted


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
    wanted: int | None = None
    for name, value in values:
        text = value.strip()
        if not (text.isascii() and text.isdigit()):
            raise InvalidRequestError(f"{name} must be a log position: an integer ≥ 0 (got {value[:40]!r})", field=name)
        wanted = max(int(text), wanted or 0)
    return wanted


@dataclass
class DocumentsMinPosition(Operation):
    """The OpenAPI operation of a route that reads ``min_position`` / ``X-Min-Position`` by hand
    (:func:`requested_position`): documents them as the declared parameters would be."""

    def __post_init__(self) -> None:
        described = "Answer only after the read side has reached this log position."
        self.parameters = [
            *(self.parameters or []),
            Parameter(
                name="min_position", param_in=ParamType.QUERY, required=False, description=described,
                schema=Schema(one_of=[Schema(type=OpenAPIType.INTEGER, minimum=0), Schema(type=OpenAPIType.NULL)]),
            ),
            Parameter(
                name="X-Min-Position", param_in=ParamType.HEADER, required=False,
                description="Same as the `min_position` query parameter.",
                schema=Schema(one_of=[Schema(type=OpenAPIType.INTEGER, minimum=0), Schema(type=OpenAPIType.NULL)]),
            ),
        ]


def _wait_for_recorded_position(services: Services, wanted: int, timeout: float) -> bool:
    """Wait for the read side to reach ``wanted``; a position the log has not reached is a client error (422),
    not something to wait for. The database not answering raises (503)."""
    progress = services.progress
    if progress.read() >= wanted:
        return True
    assert services.ledger is not None
    head = services.ledger.recorder.max_notification_id() or 0
    if wanted > head:
        raise InvalidRequestError(
            f"min_position {wanted} is beyond the last position recorded in the log ({head})",
            field="min_position",
            log_position=head,
        )
    return bool(progress.wait_for(wanted, timeout))


async def read_side_reached(services: Services, position: int) -> bool:
    """Wait (without holding a thread) until every read model applied ``position``; False after the
    configured timeout, or at once when the app keeps no read side."""
    progress = services.progress
    if progress is None:
        return False
    if position <= progress.reached:
        return True
    loop = asyncio.get_running_loop()
    reached = loop.create_future()

    def settle() -> None:
        if not reached.done():
            reached.set_result(True)

    withdraw = progress.when_reached(position, lambda: loop.call_soon_threadsafe(settle))
    try:
        return bool(await asyncio.wait_for(reached, services.options.consistency_timeout))
    except asyncio.TimeoutError:
        withdraw()
        return False


def provide_context(
    request: Request[Any, Any, Any],
    x_actor: Annotated[
        str | None,
        HeaderParameter(
            name="X-Actor",
            description="Who runs the command; honoured only in open mode (with authentication on, the actor "
            "is always the token's name and this header is ignored).",
        ),
    ] = None,
    x_reason: Annotated[str | None, HeaderParameter(name="X-Reason", description="Why (recorded on the events).")] = None,
) -> CommandContext:
    principal = principal_of(request)
    actor = principal.name if principal is not None else (x_actor or "").strip() or "anonymous"
    if principal is None and len(actor) > ACTOR_MAX:
        raise InvalidRequestError(f"X-Actor must be at most {ACTOR_MAX} characters", field="X-Actor")
    reason = (x_reason or "").strip() or None
    if reason is not None and len(reason) > REASON_MAX:
        raise InvalidRequestError(f"X-Reason must be at most {REASON_MAX} characters", field="X-Reason")
    return CommandContext(actor=actor, reason=reason, correlation_id=correlation_id(request.scope))


def with_reason(context: CommandContext, reason: str | None) -> CommandContext:
    """A reason given in the body overrides the ``X-Reason`` header."""
    if reason is None or not reason.strip():
        return context
    if len(reason) > REASON_MAX:
        raise InvalidRequestError(f"reason must be at most {REASON_MAX} characters", field="reason")
    return CommandContext(actor=context.actor, reason=reason.strip(), correlation_id=context.correlation_id)


DEPENDENCIES = {
    "ledger": Provide(provide_ledger, sync_to_thread=False),
    "services": Provide(provide_services, sync_to_thread=False),
    "reads": Provide(provide_reads),
    "context": Provide(provide_context, sync_to_thread=False),
    "compatibility_check": Provide(provide_compatibility_check, sync_to_thread=False),
}


# -- parsing helpers -------------------------------------------------------------------------------
def parse_uuid(value: str, what: str = "id") -> UUID:
    try:
        return UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise InvalidRequestError(f"{what} must be a UUID (got {value[:80]!r})", field=what) from None


def parse_time(value: str | None, what: str) -> datetime | None:
    """An ISO 8601 time; a time without an offset is UTC."""
    if value is None or value == "":
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(
            f"{what} must be an ISO 8601 time such as 2025-01-31T12:00:00Z (got {value[:80]!r})", field=what
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def parse_if_match(value: str | None) -> int | None:
    """The profile version an ``If-Match`` header names (``"3"``, ``W/"3"``, ``3``); ``*`` or absent → None."""
    if value is None:
        return None
    text = value.strip()
    if text in ("", "*"):
        return None
    first = text.split(",")[0].strip().removeprefix("W/").strip('"').strip()
    if first.isascii() and first.isdigit():
        return int(first)
    return -1  # matches no version: the command answers 412


def etag(version: int) -> str:
    return f'"{version}"'
