"""Running a command on behalf of a request: who, why, which request, and where it landed in the log."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ledger.domainmodel import CommandContext, acting_as

T = TypeVar("T")

POSITION_HEADER = "X-Ledger-Position"


def run_command(context: CommandContext, command: Callable[[], T]) -> T:
    """Run ``command`` with ``context`` as the actor, reason and correlation id of the events it records."""
    with acting_as(context):
        return command()


def position_headers(position: int) -> dict[str, str]:
    return {POSITION_HEADER: str(position)}
