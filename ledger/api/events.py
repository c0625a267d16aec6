"""``/api/events``: the audit log, from its read model, as pages or as a live Server-Sent Events tail.

Least privilege: the events of API tokens (``AccessTokens.*``: names, roles, ids, salts, digests), and the
idempotency claims of commands on them, are shown to admins only; for everyone else they are not there, in
pages, filters and streams alike. A page holds at most ``limit`` events and stops before ``page_bytes`` of JSON;
``next_cursor`` continues where it stopped, so nothing is skipped. A stream ends when its token is revoked or expires (checked every ``sse_poll`` seconds).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio
import anyio.to_thread
import msgspec
from litestar import Controller, Request, get
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from ledger.access import AccessTokens, Principal
from ledger.api.auth import principal_of
from ledger.api.deps import LOG_POSITION, LOOKUP, Cursor, log_position, parse_time, refuse_nul
from ledger.api.errors import INVALID, NOT_FOUND, UNAVAILABLE, responses
from ledger.api.runtime import Runtime
from ledger.api.schemas import EventList, EventRead
from ledger.api.tokens import TokenController
from ledger.errors import ValidationError
from ledger.event_log import checked_event_type, refuse_past_head
from ledger.idempotency import IdempotencyKey
from ledger.outages import is_database_unavailable
from ledger.states import convert
from projections.errors import ReadShareError, ReadTimeoutError
from projections.reading import MAX_LIMIT
from projections.shares import Shares, reader

SCAN_BATCH = 50
"""Rows read from the read model at a time (pages and streams): bounds the memory one request holds."""
FIRST_BATCH = 2
"""Rows a page reads first: its next batches are sized by what these weigh."""
SCAN_MAX = 5_000
"""Rows one page request looks at, at most (hidden events included); ``next_cursor`` goes on from there."""
TOKEN_AGGREGATE = AccessTokens.__name__


STREAM_RETRY_AFTER = 5
OUTAGE_RETRY_S = 1.0  # how often an open stream looks again while the database is unavailable

ProfileFilter = Annotated[str | None, QueryParameter(description="Only events of this profile (its id or name).")]
ActorFilter = Annotated[str | None, QueryParameter(description="Only events recorded by this actor.")]
TypeFilter = Annotated[str | None, QueryParameter(
    description="Only this event type, e.g. `Profile.Created` (another than the log's types is a 422).")]
After = Annotated[int | None, QueryParameter(**LOG_POSITION, description="Only events after this log position.")]


def about_tokens(row: Any) -> bool:
    """Whether an audit row is about API tokens, for admins' eyes only: an ``AccessTokens`` event, or the
    idempotency claim of a command on tokens (its path names a token's id; its reason may say whose)."""
    if row.aggregate_type == TOKEN_AGGREGATE:
        return True
    path = row.payload.get("path") if row.aggregate_type == IdempotencyKey.__name__ else None
    return isinstance(path, str) and path.startswith(TokenController.path)


def sees_token_events(runtime: Runtime, principal: Principal | None) -> bool:
    """Admins (and everyone in open mode, where anyone may manage tokens) see the events of API tokens."""
    return not runtime.auth or (principal is not None and principal.role == "admin")


def audit_filters(runtime: Runtime, profile: str | None, actor: str | None, event_type: str | None) -> dict[str, Any]:
    """The read model's filters of a page or a stream (text without NUL characters; a profile by id or name; an empty
    one filters nothing)."""
    refuse_nul(actor=actor, type=event_type)
    checked_event_type(event_type, "type")
    profile_id = None if profile is None or not profile.strip() else runtime.ledger.resolve_profile(profile)
    return {"profile_id": profile_id, "actor": actor, "event_type": event_type}


class EventController(Controller):
    path = "/api/events"
    tags = ["events"]

    @get("/", summary="The audit log, oldest first (pages of at most `limit` events and about 1 MiB)", **LOOKUP)
    def list_events(
        self,
        request: Request[Any, Any, Any],
        reads: NamedDependency[Any],
        runtime: NamedDependency[Runtime],
        profile_id: ProfileFilter = None,
        actor: ActorFilter = None,
        type: TypeFilter = None,  # noqa: A002 - the query parameter's name
        since: Annotated[str | None, QueryParameter(description="ISO 8601 time, inclusive.")] = None,
        until: Annotated[str | None, QueryParameter(description="ISO 8601 time, exclusive.")] = None,
        after: After = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 100,
        cursor: Cursor = None,
    ) -> EventList:
        if after is not None:
            refuse_past_head(after, reads.log_position(), "after")
        filters = {
            **audit_filters(runtime, profile_id, actor, type),
            "since": parse_time(since, "since"),
            "until": parse_time(until, "until"),
            "after_position": after,
        }
        if filters["since"] and filters["until"] and filters["since"] > filters["until"]:
            raise ValidationError(f"since ({since}) is later than until ({until}): no event is in between",
                                  field="since")
        show_tokens = sees_token_events(runtime, principal_of(request))
        if not show_tokens and type is not None and type.startswith(f"{TOKEN_AGGREGATE}."):
            return EventList(events=[], next_cursor=None)
        return _page(reads, filters, limit, cursor, show_tokens, runtime.options.page_bytes)

    @get(
        "/stream",
        summary="Live tail of the audit log (Server-Sent Events; each `id:` is the log position)",
        media_type="text/event-stream",
        responses=responses(NOT_FOUND, INVALID, UNAVAILABLE),
    )
    async def stream_events(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        profile_id: ProfileFilter = None,
        actor: ActorFilter = None,
        type: TypeFilter = None,  # noqa: A002
        after: After = None,
        last_event_id: Annotated[
            str | None, HeaderParameter(name="Last-Event-ID", description="Resume after this position.")
        ] = None,
    ) -> ServerSentEvent:
        filters = await anyio.to_thread.run_sync(audit_filters, runtime, profile_id, actor, type)
        start = await resume_point(runtime, after, last_event_id)
        return audit_stream(request, runtime, start, filters, lambda row: ServerSentEventMessage(
            data=msgspec.json.encode(convert(row, EventRead)).decode(), event=row.event_type, id=row.position))


async def resume_point(runtime: Runtime, after: int | None, last_event_id: str | None) -> int:
    """Where a stream starts: after ``after`` or the client's ``Last-Event-ID``, the later; neither: at the log's
    head. A position past the head is refused: this log never held it (a database restored from an older copy,
    another ledger's), and the client would silently miss what is recorded up to it. While the database cannot be
    reached the position is taken as given (the stream waits for the database, as it does when one goes away)."""
    named = after is not None and "after"
    if last_event_id is not None and last_event_id.strip():
        resumed = log_position(last_event_id, "Last-Event-ID")
        if after is None or resumed > after:
            after, named = resumed, "Last-Event-ID"
    try:
        head = await anyio.to_thread.run_sync(runtime.read_model.log_position)
    except Exception as error:
        if after is None or not is_database_unavailable(error):
            raise
        return after
    refuse_past_head(after, head, named or "after")
    return head if after is None else after


def audit_stream(
    request: Request[Any, Any, Any], runtime: Runtime, after: int, filters: dict[str, Any],
    message: Callable[[Any], ServerSentEventMessage],
) -> ServerSentEvent:
    """A live tail of the audit rows after ``after`` (``message`` renders each), for the API and the console
    alike: at most ``sse_max_streams`` per server (503 beyond) and a client's share of them (429 beyond), the
    token events only for those who may see them, ended when the token it was opened with is revoked or expires."""
    slot = _StreamSlot(runtime.metrics, runtime.options.sse_max_streams, runtime.stream_shares)
    principal = principal_of(request) if runtime.auth else None
    tail = _tail(runtime, after, filters, principal, message, slot)
    # (the tail gives the slot back as it ends; a client gone before the tail began leaves it unbegun, and then
    # the background task does: its place is not held until a garbage collection finds it)
    return ServerSentEvent(tail, headers={"Cache-Control": "no-cache"}, background=BackgroundTask(slot.release))


class _StreamSlot:
    """One of the server's event streams, taken at once (so that a burst of requests cannot overshoot the limit)
    and given back when the stream ends, or when its response is dropped before it started."""

    def __init__(self, metrics: Any, limit: int, shares: Shares) -> None:
        self._metrics: Any = None  # nothing to give back unless a place was taken
        self._who, self._shares = reader.get(), shares
        shares.take(self._who)  # (one client's streams cannot take every place)
        if not metrics.try_open_stream(limit):
            shares.give_back(self._who)
            raise HTTPException(
                status_code=HTTP_503_SERVICE_UNAVAILABLE,
                detail=f"this server already serves {limit} event streams; retry later",
                headers={"Retry-After": str(STREAM_RETRY_AFTER)},
            )
        self._metrics = metrics

    def release(self) -> None:
        metrics, self._metrics = self._metrics, None
        if metrics is not None:
            metrics.stream_closed()
            self._shares.give_back(self._who)

    __del__ = release


def _page(
    reads: Any, filters: dict[str, Any], limit: int, cursor: str | None, show_tokens: bool, budget: int
) -> EventList:
    """Up to ``limit`` visible events after ``cursor``, read a batch at a time, stopping before ``budget`` bytes.
    The first batch is small and the next as many as the budget left holds at the size seen so far: a page of
    events of a megabyte each reads a few of them, not :data:`SCAN_BATCH`, to answer one."""
    events: list[EventRead] = []
    size = scanned = 0
    batch_size = FIRST_BATCH
    while True:
        batch = reads.events(**filters, limit=min(batch_size, limit - len(events)), cursor=cursor)
        for row in batch.items:
            if not show_tokens and about_tokens(row):
                continue
            event = convert(row, EventRead)
            event_size = len(msgspec.json.encode(event)) + 1
            if events and size + event_size > budget:
                return EventList(events=events, next_cursor=reads.events_cursor(events[-1].position, **filters))
            events.append(event)
            size += event_size
        scanned += len(batch.items)
        if batch.next_cursor is None:
            return EventList(events=events, next_cursor=None)
        cursor = batch.next_cursor
        # (none kept: rows hidden from this reader, token events, which are small)
        batch_size = max(1, min(SCAN_BATCH, (budget - size) * len(events) // size + 1)) if events else SCAN_BATCH
        if len(events) >= limit or scanned >= SCAN_MAX:
            return EventList(events=events, next_cursor=cursor)


async def _tail(
    runtime: Runtime, after: int, filters: dict[str, Any], principal: Principal | None,
    message: Callable[[Any], ServerSentEventMessage], slot: _StreamSlot,
) -> AsyncIterator[ServerSentEventMessage]:
    """The audit rows after ``after`` as they reach the read model, with keep-alives, until the client goes, the
    server stops, or the token the stream was opened with is revoked or expires (checked before each look)."""
    show_tokens = sees_token_events(runtime, principal)
    options = runtime.options
    unchecked = True  # the start: taken as given if the database was away when the stream was opened
    loop, moved = asyncio.get_running_loop(), asyncio.Event()  # set as the read models move on: look at once
    unfollow = runtime.progress.follow(lambda: loop.call_soon_threadsafe(moved.set)) if runtime.progress else None
    try:
        yield ServerSentEventMessage(data=None, comment="connected", retry=2000)
        last_sent = time.monotonic()
        while not runtime.shutdown.is_set():
            try:
                if unchecked:
                    refuse_past_head(after, await anyio.to_thread.run_sync(runtime.read_model.log_position),
                                     "the position to resume after")
                    unchecked = False
                allowed = principal is None or await runtime.tokens.still_allows(principal)
                page = await anyio.to_thread.run_sync(
                    lambda: runtime.read_model.events(after_position=after, limit=SCAN_BATCH, **filters)
                ) if allowed else None
            except ValidationError as error:  # past the log's head: it would wait for what this log never held
                yield ServerSentEventMessage(event="error", data=msgspec.json.encode(
                    {"error": error.code, "detail": error.message, **error.details}).decode())
                return
            except (ReadShareError, ReadTimeoutError) as error:  # its client's other reads take its share, or
                yield ServerSentEventMessage(data=None, comment=f"waiting: {error}")  # the server is busy: a moment
                last_sent = time.monotonic()
                await anyio.sleep(OUTAGE_RETRY_S)
                continue
            except Exception as error:
                if not is_database_unavailable(error):
                    raise
                # the stream stays open (and alive) until the database is back, then goes on from where it was
                yield ServerSentEventMessage(data=None, comment="the database is unavailable; waiting for it")
                last_sent = time.monotonic()
                await anyio.sleep(OUTAGE_RETRY_S)
                continue
            if page is None:
                yield ServerSentEventMessage(data=None, comment="token revoked or expired")
                return
            for row in page.items:
                after = row.position
                if show_tokens or not about_tokens(row):
                    yield message(row)
                    last_sent = time.monotonic()
            if page.next_cursor is not None:
                continue
            if time.monotonic() - last_sent >= options.sse_heartbeat:
                yield ServerSentEventMessage(data=None, comment="keep-alive")
                last_sent = time.monotonic()
            with anyio.move_on_after(options.sse_poll):  # (at the latest: a write of another process on SQLite)
                await moved.wait()
            moved.clear()
    finally:
        if unfollow is not None:
            unfollow()
        slot.release()
