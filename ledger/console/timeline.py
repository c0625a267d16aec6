"""``/events``: the audit timeline newest first, filtered, live over Server-Sent Events, and the chain's check."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import anyio.to_thread
from litestar import Controller, Request, get
from litestar.params import FromQuery, HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, Template
from litestar.response.sse import ServerSentEventMessage

from ledger.api.auth import principal_of
from ledger.api.deps import LOG_POSITION, log_position
from ledger.api.events import about_tokens, audit_filters, audit_stream, resume_point, sees_token_events
from ledger.event_log import EVENT_TYPES
from ledger.api.runtime import WALK_WAIT_SECONDS
from ledger.api.runtime import Runtime
from ledger.console.profiles import runtime_of
from ledger.console.rendering import fragment_or_page, page, render_fragment
from ledger.console.views import newest_events, optional_text

PAGE_SIZE = 50


def filters_from(runtime: Runtime, actor: str | None, profile: str | None, type_: str | None) -> dict[str, Any]:
    """The read model's filters, as the API reads them (``profile``: a profile's id or name); empty fields are none."""
    return audit_filters(runtime, optional_text(profile), optional_text(actor), optional_text(type_))


class EventPages(Controller):
    path = "/events"

    @get("/", name="console:events", sync_to_thread=True)
    def events(
        self,
        request: Request[Any, Any, Any],
        actor: FromQuery[str | None] = None,
        profile: FromQuery[str | None] = None,
        type: FromQuery[str | None] = None,  # noqa: A002 - the query parameter's name
        before: Annotated[int | None, QueryParameter(**LOG_POSITION)] = None,
    ) -> Template:
        runtime = runtime_of(request)
        reads = runtime.read_model
        filters = filters_from(runtime, actor, profile, type)
        head = reads.log_position()
        rows, older = newest_events(reads, limit=PAGE_SIZE, before=before, **filters)
        if not sees_token_events(runtime, principal_of(request)):  # the token records: admins only, as in the API
            rows = [row for row in rows if not about_tokens(row)]
        shown = {"actor": actor or "", "profile": profile or "", "type": type or ""}
        return page(
            request,
            "events.html.j2",
            rows=rows,
            older=older,
            live=before is None,
            head=head,
            filters=shown,
            event_types=EVENT_TYPES,
        )

    @get("/verify", name="console:verify", sync_to_thread=True)
    def verify(self, request: Request[Any, Any, Any]) -> Template:
        """The chain's check, as a reader's ``GET /api/ledger/verify``: what is new since the last walk (the
        timeline loads it after the page)."""
        report = runtime_of(request).ledger.verify_log(full=False, wait=WALK_WAIT_SECONDS)
        return fragment_or_page(request, "_verify.html.j2", "verify.html.j2", report=report)

    @get("/stream", name="console:events-stream")
    async def stream(
        self,
        request: Request[Any, Any, Any],
        after: FromQuery[str] = "0",
        actor: FromQuery[str | None] = None,
        profile: FromQuery[str | None] = None,
        type: FromQuery[str | None] = None,  # noqa: A002
        last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID")] = None,
    ) -> ServerSentEvent:
        """Audit rows after ``after`` (the page's head), or after the last one a reconnecting client saw."""
        filters = await anyio.to_thread.run_sync(filters_from, runtime_of(request), actor, profile, type)
        start = await resume_point(runtime_of(request), log_position(after, "after"), last_event_id)
        return audit_stream(request, runtime_of(request), start, filters, lambda row: ServerSentEventMessage(
            data=render_fragment(request, "_event.html.j2", row=row, fresh=True), event="audit", id=row.position))
