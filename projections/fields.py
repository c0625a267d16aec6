"""Turning event fields into statement parameters (shared by the profile-shaped read models)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledger.values import name_key

DETAIL_FIELDS = ("name", "description", "tags", "products", "metadata")


def search_text(text: str | None) -> str:
    """What text search compares against: case-folded (the query is folded the same way)."""
    return (text or "").casefold()


def detail_overlay(changes: Mapping[str, Any]) -> dict[str, Any]:
    """``set_<field>`` flags and values for the descriptive fields an event changes (others stay as they are)."""
    params: dict[str, Any] = {}
    for field in DETAIL_FIELDS:
        present = field in changes
        value = changes.get(field)
        if field in ("tags", "products") and present:
            value = list(value or [])
        if field == "metadata" and present:
            value = dict(value or {})
        params[f"set_{field}"] = present
        params[field] = value
    name = changes.get("name")
    params["name_key"] = name_key(name) if name is not None else None
    params["name_search"] = search_text(name) if name is not None else None
    params["description_search"] = search_text(changes.get("description"))
    return params


def spec_params(event: Any) -> dict[str, Any]:
    steering = dict(event.steering or {})
    return {
        "model_id": event.model_id,
        "sae_id": event.sae_id,
        "layer": event.layer,
        "steering": steering,
        "feature_count": len(steering),
    }


def created_params(event: Any) -> dict[str, Any]:
    """Every field of a ``Profile.Created`` event, as a full overlay."""
    changes = {field: getattr(event, field) for field in DETAIL_FIELDS}
    return {**detail_overlay(changes), **spec_params(event)}


def audit_params(event: Any) -> dict[str, Any]:
    return {
        "actor": event.actor,
        "reason": event.reason,
        "correlation_id": event.correlation_id,
        "recorded_at": event.timestamp,
    }
