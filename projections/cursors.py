"""Opaque keyset cursors: which listing issued them and the sort key of the last row returned."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from ledger.errors import ValidationError
from ledger import values
from ledger.values import INT64_MAX, INT64_MIN
from projections.errors import InvalidCursorError


def listing(kind: str, **filters: Any) -> str:
    """The listing a query's cursors belong to: its kind, and a digest of the filters and order they were issued
    under, so that a cursor sent with other ones is refused rather than continued under them."""
    given = json.dumps(filters, sort_keys=True, default=str, separators=(",", ":")).encode()
    return f"{kind}:{hashlib.sha256(given).hexdigest()[:16]}"


def encode(listing: str, key: list[Any]) -> str:
    raw = json.dumps({"l": listing, "k": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _storable(text: str) -> bool:
    """Text a column can hold (:func:`ledger.values.text`: no NUL, no lone surrogate)."""
    try:
        values.text(text, "cursor")
    except ValidationError:
        return False
    return True


def decode(cursor: str, listing: str, types: tuple[type, ...]) -> list[Any]:
    """The key of a cursor issued by ``listing``; refuses anything else with :class:`InvalidCursorError`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        document = json.loads(base64.urlsafe_b64decode(padded.encode()))
        key = document["k"]
        issued_by = document["l"]
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeError):
        raise InvalidCursorError("invalid cursor: not a cursor this service issued") from None
    if issued_by != listing:
        if str(issued_by).split(":")[0] == listing.split(":")[0]:
            raise InvalidCursorError("invalid cursor: it was issued for other filters or another order; send it "
                                     "with the query that returned it (or start again without a cursor)")
        raise InvalidCursorError(f"invalid cursor: it belongs to another listing ({issued_by!r}, not {listing!r})")
    if (
        not isinstance(key, list)
        or len(key) != len(types)
        or not all(isinstance(value, kind) and not isinstance(value, bool) for value, kind in zip(key, types))
        or any(isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX for value in key)  # no column holds it
        or any(isinstance(value, str) and not _storable(value) for value in key)
    ):
        raise InvalidCursorError("invalid cursor: malformed position")
    return key
