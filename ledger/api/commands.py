"""Running a command on behalf of a request: who, why, which request, where it landed in the log, and answering
only once the read side shows it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from litestar.datastructures import ResponseHeader
from litestar.status_codes import HTTP_200_OK
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ledger.domainmodel import CommandContext, acting_as

T = TypeVar("T")

POSITION_HEADER = "X-Ledger-Position"


def run_command(context: CommandContext, command: Callable[[], T]) -> T:
    """Run ``command`` with ``context`` as the actor, reason and correlation id of the events it records."""
    with acting_as(context):
        return command()


def position_headers(position: int) -> dict[str, str]:
    return {POSITION_HEADER: str(position)}


POSITION_DOC = ResponseHeader(
    name=POSITION_HEADER,
    documentation_only=True,
    value="0",
    description="The log position of the command's last event: pass it as `min_position` to read this write.",
)
ETAG_DOC = ResponseHeader(
    name="ETag", documentation_only=True, value='"1.1.9f1c0d2e4b7a4c3d8e6f5a4b3c2d1e0f"',
    description="The profile's version, its stream's (an edit that keeps the version changes it) and its id, for "
    "`If-Match`.",
)
LOCATION_DOC = ResponseHeader(name="Location", documentation_only=True, value="/api/profiles/9f1c0d2e-4b7a-4c3d-8e6f-"
                              "5a4b3c2d1e0f", description="Where what the command created is read.")
COMMAND_HEADERS = [POSITION_DOC]
PROFILE_COMMAND_HEADERS = [POSITION_DOC, ETAG_DOC]
CREATED_PROFILE_HEADERS = [*PROFILE_COMMAND_HEADERS, LOCATION_DOC]
COMMAND_ROUTE: dict[str, Any] = {"sync_to_thread": True, "status_code": HTTP_200_OK,
                                 "response_headers": COMMAND_HEADERS}
"""The route options of a command that answers 200 with its log position."""
PROFILE_COMMAND_ROUTE = {**COMMAND_ROUTE, "response_headers": PROFILE_COMMAND_HEADERS}
"""The route options of a command that answers 200 with the profile it changed (its ETag too)."""


# -- read-your-writes ------------------------------------------------------------------------------------------
PENDING_HEADER = "X-Ledger-Read-Side"
"""``pending`` on a command's answer when the read models had not reached its position within the bound (or
the client asked for ``Prefer: respond-async``): pass the position as ``min_position`` to read the write."""
_QUERY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def prefers_async(scope: Scope) -> bool:
    """Whether the request carries ``Prefer: respond-async`` (RFC 7240), among any other preferences."""
    for name, value in scope.get("headers", ()):
        if name == b"prefer":
            for preference in value.decode("latin-1").split(","):
                if preference.split(";")[0].split("=")[0].strip().lower() == "respond-async":
                    return True
    return False


def read_your_writes_middleware(reached: Callable[[int], Awaitable[bool]]) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware factory: a command's successful answer (one that carries ``X-Ledger-Position``) is sent
    only once ``reached(position)`` says every read model applied it, so any query on any server reflects the
    command without the client passing anything. ``Prefer: respond-async`` answers at once (bulk writers)."""
    position_header = POSITION_HEADER.lower().encode()

    def middleware(app: ASGIApp) -> ASGIApp:
        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope.get("method") in _QUERY_METHODS:
                await app(scope, receive, send)
                return
            respond_async = prefers_async(scope)

            async def send_when_readable(message: Message) -> None:
                if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                    headers = list(message.get("headers", ()))
                    position = next((value for name, value in headers if name == position_header), None)
                    if position is not None:
                        if respond_async:
                            headers += [(b"preference-applied", b"respond-async"), (PENDING_HEADER.encode(), b"pending")]
                        elif not await reached(int(position)):
                            headers.append((PENDING_HEADER.encode(), b"pending"))
                        message = {**message, "headers": headers}  # type: ignore[typeddict-item]
                await send(message)

            await app(scope, receive, send_when_readable)

        return wrapped

    return middleware
