"""Errors raised by the read side."""

from __future__ import annotations

from ledger.errors import BusyError, ConflictError, LedgerError, ValidationError


class InvalidQueryError(ValidationError):
    """A query argument is not acceptable (bad limit, sort, filter...)."""

    code = "invalid_query"


class InvalidCursorError(InvalidQueryError):
    """A pagination cursor that this listing did not issue, or that was altered."""

    code = "invalid_cursor"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="cursor")


class UnknownProjectionError(ValidationError):
    """A projection name that does not exist."""

    code = "unknown_projection"


class RebuildInProgressError(ConflictError):
    """A rebuild of the read models is already running (in this process or another on the database)."""

    code = "rebuild_in_progress"
    passing = True


class ReadModelDamagedError(LedgerError):
    """A read model's row that cannot be read as its table declares it: changed outside the ledger."""

    code = "read_model_damaged"


class ReadTimeoutError(LedgerError):
    """A query of the read models ran past its time (``READ_STATEMENT_TIMEOUT_SECONDS``) and was stopped."""

    code = "read_timeout"
    retry_after_s = 1


class ReadShareError(BusyError):
    """A client holding its share of a server's database connections (or event streams) asked for another."""

    retry_after_s = 1
    passing = True
