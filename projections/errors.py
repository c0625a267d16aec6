"""Errors raised by the read side."""

from __future__ import annotations

from ledger.errors import ConflictError


class InvalidQueryError(ValueError):
    """A query argument is not acceptable (bad limit, sort, filter...)."""


class InvalidCursorError(InvalidQueryError):
    """A pagination cursor that this listing did not issue, or that was altered."""


class UnknownProjectionError(ValueError):
    """A projection name that does not exist."""


class RebuildInProgressError(ConflictError):
    """A rebuild of the read models is already running (in this process or another on the database)."""

    code = "rebuild_in_progress"
