"""Read model ``audit_events``: the event timeline, one row per event, in log order.

Every event type has the same handler: who, when, why, which aggregate, which profile it concerns, and the
event's own fields as a JSON payload.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from ledger.domainmodel import Profile

from projections.bulk import MemoryBuild, pick
from projections.fields import audit_params
from projections.projection import ReadModelProjection, Write, aggregate_type_name, event_type_name

TABLES = {
    "audit_events": (
        """CREATE TABLE IF NOT EXISTS {audit_events} (
            position {bigint} PRIMARY KEY,
            recorded_at {timestamp} NOT NULL,
            actor text NOT NULL,
            event_type text NOT NULL,
            aggregate_type text NOT NULL,
            originator_id {uuid} NOT NULL,
            originator_version integer NOT NULL,
            profile_id {uuid},
            reason text,
            correlation_id text,
            payload {json} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS {audit_events}_by_profile ON {audit_events} (profile_id, position)",
        "CREATE INDEX IF NOT EXISTS {audit_events}_by_actor ON {audit_events} (actor, position)",
        "CREATE INDEX IF NOT EXISTS {audit_events}_by_type ON {audit_events} (event_type, position)",
        "CREATE INDEX IF NOT EXISTS {audit_events}_by_time ON {audit_events} (recorded_at)",
    ),
}

STATEMENTS = {
    "insert": """INSERT INTO {audit_events} (position, recorded_at, actor, event_type, aggregate_type, originator_id,
            originator_version, profile_id, reason, correlation_id, payload)
        VALUES (:position, :recorded_at, :actor, :event_type, :aggregate_type, :originator_id, :originator_version,
            :profile_id, :reason, :correlation_id, :payload)""",
}

_ENVELOPE = {"timestamp", "originator_topic", "actor", "reason", "correlation_id", "originator_id",
             "originator_version"}


def concerned_profile(event: Any) -> UUID | None:
    """The profile an event is about, where there is one."""
    if isinstance(event, Profile.Event):
        return event.originator_id
    return getattr(event, "profile_id", None)


_PLAIN = frozenset({str, int, float, bool, type(None)})


def json_safe(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        return {
            key if type(key) is str else str(key): item if type(item) in _PLAIN else json_safe(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def payload(event: Any) -> dict[str, Any]:
    return {
        key: value if type(value) in _PLAIN else json_safe(value)
        for key, value in vars(event).items()
        if key not in _ENVELOPE
    }


def on_any_event(event: Any, position: int) -> list[Write]:
    params = {
        "position": position,
        "event_type": event_type_name(event),
        "aggregate_type": aggregate_type_name(event),
        "originator_id": event.originator_id,
        "originator_version": event.originator_version,
        "profile_id": concerned_profile(event),
        "payload": payload(event),
        **audit_params(event),
    }
    return [Write("insert", params)]


# What the statement does, for rebuilds in memory (projections.bulk).
COLUMNS = (
    "position", "recorded_at", "actor", "event_type", "aggregate_type", "originator_id", "originator_version",
    "profile_id", "reason", "correlation_id", "payload",
)


def fold_insert(build: MemoryBuild, p: Any) -> None:
    build.seal("audit_events", pick(p, COLUMNS))  # one row per position, never changed again


def make_row(build: MemoryBuild, event: Any, position: int) -> None:
    """``on_any_event`` and ``fold_insert`` in one step (the hot path of a rebuild)."""
    state = vars(event)
    kind = type(event)
    names = _NAMES.get(kind)
    if names is None:
        names = _NAMES[kind] = (event_type_name(event), aggregate_type_name(event), issubclass(kind, Profile.Event))
    event_type, aggregate_type, is_profile = names
    originator_id = state["originator_id"]
    build.sealed["audit_events"].append({
        "position": position,
        "recorded_at": state["timestamp"],
        "actor": state["actor"],
        "event_type": event_type,
        "aggregate_type": aggregate_type,
        "originator_id": originator_id,
        "originator_version": state["originator_version"],
        "profile_id": originator_id if is_profile else getattr(event, "profile_id", None),
        "reason": state["reason"],
        "correlation_id": state["correlation_id"],
        "payload": payload(event),
    })


_NAMES: dict[type, tuple[str, str, bool]] = {}


PROJECTION = ReadModelProjection(
    name="audit",
    tables=TABLES,
    statements=STATEMENTS,
    handlers={},
    default_handler=on_any_event,
    folds={"insert": fold_insert},
    default_row_maker=make_row,
)
