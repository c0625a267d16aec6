"""Running a command on behalf of a request: who, why, which request, and where it landed in the log."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from litestar.datastructures import ResponseHeader

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
    name="ETag", documentation_only=True, value='"1"', description="The profile's version, for `If-Match` on the next change."
)
COMMAND_HEADERS = [POSITION_DOC]
PROFILE_COMMAND_HEADERS = [POSITION_DOC, ETAG_DOC]
