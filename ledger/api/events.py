"""``/api/events``: the audit log, from its read model, as pages or as a live Server-Sent Events tail."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import anyio.to_thread
import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from ledger.api.deps import Services, parse_time, parse_uuid
from ledger.api.errors import INVALID, TIMEOUT, InvalidRequestError, responses
from ledger.api.schemas import EventList
from ledger.api.views import event_from_row

STREAM_BATCH = 200

ProfileFilter = Annotated[str | None, QueryParameter(description="Only events of this profile (UUID).")]
ActorFilter = Annotated[str | None, QueryParameter(description="Only events recorded by this actor.")]
TypeFilter = Annotated[str | None, QueryParameter(description="Only this event type, e.g. `Profile.Created`.")]
After = Annotated[int | None, QueryParameter(ge=0, description="Only events after this log position.")]


class EventController(Controller):
    path = "/api/events"
    tags = ["events"]

    @get("/", summary="The audit log, oldest first", sync_to_thread=True, responses=responses(INVALID, TIMEOUT))
    def list_events(
        self,
        reads: NamedDependency[Any],
        profile_id: ProfileFilter = None,
        actor: ActorFilter = None,
        type: TypeFilter = None,  # noqa: A002 - the query parameter's name
        since: Annotated[str | None, QueryParameter(description="ISO 8601 time, inclusive.")] = None,
        until: Annotated[str | None, QueryParameter(description="ISO 8601 time, exclusive.")] = None,
        after: After = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, QueryParameter(description="`next_cursor` of the previous page.")] = None,
    ) -> EventList:
        page = reads.events(
            profile_id=parse_uuid(profile_id, "profile_id") if profile_id is not None else None,
            actor=actor,
            event_type=type,
            since=parse_time(since, "since"),
            until=parse_time(until, "until"),
            after_position=after,
            limit=limit,
            cursor=cursor,
        )
        return EventList(events=[event_from_row(row) for row in page.items], next_cursor=page.next_cursor)

    @get(
        "/stream",
        summary="Live tail of the audit log (Server-Sent Events; each `id:` is the log position)",
        responses=responses(INVALID),
    )
    async def stream_events(
        self,
        services: NamedDependency[Services],
        profile_id: ProfileFilter = None,
        actor: ActorFilter = None,
        type: TypeFilter = None,  # noqa: A002
        after: After = None,
        last_event_id: Annotated[
            str | None, HeaderParameter(name="Last-Event-ID", description="Resume after this position.")
        ] = None,
    ) -> ServerSentEvent:
        start = after
        if last_event_id is not None and last_event_id.strip():
            text = last_event_id.strip()
            if not (text.isascii() and text.isdigit()):
                raise InvalidRequestError("Last-Event-ID must be a log position (an integer)", field="Last-Event-ID")
            start = max(start or 0, int(text))
        if start is None:
            start = await anyio.to_thread.run_sync(services.read_model.log_position)
        filters = {
            "profile_id": parse_uuid(profile_id, "profile_id") if profile_id is not None else None,
            "actor": actor,
            "event_type": type,
        }
        return ServerSentEvent(_tail(services, int(start), filters), headers={"Cache-Control": "no-cache"})


async def _tail(services: Services, after: int, filters: dict[str, Any]) -> AsyncIterator[ServerSentEventMessage]:
    """Events after ``after`` as they reach the read model, until the client goes or the server stops."""
    options = services.options
    services.metrics.stream_opened()
    try:
        yield ServerSentEventMessage(data=None, comment="connected", retry=2000)
        last_sent = time.monotonic()
        while not services.shutdown.is_set():
            page = await anyio.to_thread.run_sync(
                lambda: services.read_model.events(after_position=after, limit=STREAM_BATCH, **filters)
            )
            for row in page.items:
                after = row.position
                yield ServerSentEventMessage(
                    data=msgspec.json.encode(event_from_row(row)).decode(), event=row.event_type, id=row.position
                )
                last_sent = time.monotonic()
            if page.next_cursor is not None:
                continue
            if time.monotonic() - last_sent >= options.sse_heartbeat:
                yield ServerSentEventMessage(data=None, comment="keep-alive")
                last_sent = time.monotonic()
            await anyio.sleep(options.sse_poll)
    finally:
        services.metrics.stream_closed()
