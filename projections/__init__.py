"""Read models of the profile ledger, kept from its event log (see :mod:`projections.runner`)."""

from projections.errors import InvalidCursorError, InvalidQueryError, UnknownProjectionError
from projections.registry import PROJECTION_NAMES

__all__ = [
    "PROJECTION_NAMES",
    "InvalidCursorError",
    "InvalidQueryError",
    "UnknownProjectionError",
]
