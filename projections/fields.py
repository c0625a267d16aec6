"""Column values from event fields (shared by the profile-shaped read models)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ledger.domainmodel import DETAIL_FIELDS
from ledger.values import name_key


def search_text(text: str | None) -> str:
    """What text search compares against: case-folded (the query is folded the same way)."""
    return (text or "").casefold()


DETAIL_BYTES = {"description_bytes": int, "metadata_bytes": int}
"""Internal columns of the profile-shaped tables: the size of each row's description and metadata as JSON, which
bounds a page of them (:data:`PROFILE_SIZES`)."""
PROFILE_SIZES = {"features_max": "feature_count", "record_bytes_max": "description_bytes + metadata_bytes"}
"""A profile-shaped row's sizes, as :func:`projections.reading.bounded_page` sums them."""


def json_size(value: Any) -> int:
    """The bytes of ``value`` as compact JSON (a page's bound counts those it sends)."""
    return len(msgspec.json.encode(value))


def details(changes: Mapping[str, Any], *, searchable: bool = False) -> dict[str, Any]:
    """The descriptive fields an event sets (others stay as they are); ``searchable`` adds the columns that
    names and descriptions are looked up and searched by."""
    values: dict[str, Any] = {}
    for field in DETAIL_FIELDS:
        if field in changes:
            value = changes[field]
            values[field] = list(value or []) if field in ("tags", "products") else (
                dict(value or {}) if field == "metadata" else value)
    if "description" in values:
        values["description_bytes"] = json_size(values["description"])
    if "metadata" in values:
        values["metadata_bytes"] = json_size(values["metadata"])
    if searchable and "name" in values:
        values["name_key"] = name_key(values["name"])
        values["name_search"] = search_text(values["name"])
    if searchable and "description" in values:
        values["description_search"] = search_text(values["description"])
    return values


def spec(event: Any) -> dict[str, Any]:
    steering = dict(event.steering or {})
    return {
        "model_id": event.model_id,
        "sae_id": event.sae_id,
        "layer": event.layer,
        "steering": steering,
        "feature_count": len(steering),
    }


def content(event: Any, *, searchable: bool = False) -> dict[str, Any]:
    """Every field of an event that carries the whole profile (``Created``, ``Restored``)."""
    return {**details({field: getattr(event, field) for field in DETAIL_FIELDS}, searchable=searchable),
            **spec(event)}


def recorded(event: Any) -> dict[str, Any]:
    return {
        "actor": event.actor,
        "reason": event.reason,
        "correlation_id": event.correlation_id,
        "recorded_at": event.timestamp,
    }
