"""Read model ``audit_events``: the event timeline, one row per event, in log order.

Every event type has the same handler: who, when, why, which aggregate, which profile it concerns, and the
event's own fields as a JSON payload.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any
from uuid import UUID

from ledger.domainmodel import profile_of

from projections import cursors
from projections.ops import Insert, Op
from projections.projection import ReadModelProjection
from projections.reading import Queries, add_equalities, checked_limit
from projections.rows import AuditRow, Page
from projections.tables import Index, Table

AUDIT = Table(
    "audit_events",
    AuditRow,
    key=("position",),
    indexes=(
        Index("by_profile", "profile_id, position"),
        Index("by_actor", "actor, position"),
        Index("by_type", "event_type, position"),
        Index("by_time", "recorded_at"),
    ),
    append_only=True,
)

_ENVELOPE = {"timestamp", "originator_topic", "actor", "reason", "correlation_id", "originator_id",
             "originator_version"}


def payload(event: Any) -> dict[str, Any]:
    """The event's own fields, as they are: every JSON column is written by msgspec, which renders ids, times
    and integer keys itself (as the API does: a time in UTC ends in ``Z``)."""
    return {key: value for key, value in vars(event).items() if key not in _ENVELOPE}


@cache
def _names(kind: type) -> tuple[str, str]:
    """The event type (``Profile.Created``) and the aggregate type (``Profile``)."""
    return kind.__qualname__, kind.__qualname__.split(".")[0]


def on_any_event(event: Any) -> list[Op]:
    """Who, when, why, which aggregate and profile, and the event's own fields (the hot path of a rebuild)."""
    state = vars(event)
    event_type, aggregate_type = _names(type(event))
    originator_id = state["originator_id"]
    return [Insert(AUDIT, {
        "recorded_at": state["timestamp"],
        "actor": state["actor"],
        "event_type": event_type,
        "aggregate_type": aggregate_type,
        "originator_id": originator_id,
        "originator_version": state["originator_version"],
        "profile_id": profile_of(event),
        "reason": state["reason"],
        "correlation_id": state["correlation_id"],
        "payload": payload(event),
    })]


def row_of(position: int, event: Any) -> AuditRow:
    """The row this read model keeps for ``event`` at ``position`` (as ``ledger log``, reading the log, shows it)."""
    (insert,) = on_any_event(event)
    return AuditRow(position=position, **insert.values)


PROJECTION = ReadModelProjection(name="audit", tables=(AUDIT,), handlers={}, default_handler=on_any_event, version=3)


def _listing(profile_id: UUID | str | None = None, actor: str | None = None, event_type: str | None = None,
             since: datetime | None = None, until: datetime | None = None, up_to_position: int | None = None,
             after_position: int | None = None) -> str:
    """The listing of :meth:`AuditQueries.events` under these filters (a cursor goes on after any ``after``)."""
    return cursors.listing("events", profile_id=str(profile_id) if profile_id else None,
                           actor=(actor or "").strip() or None, event_type=(event_type or "").strip() or None,
                           since=since, until=until, up_to=up_to_position)  # (as the query reads them)


class AuditQueries(Queries):
    def events_cursor(self, position: int, **filters: Any) -> str:
        """The cursor that goes on after ``position`` in :meth:`events` under ``filters`` (its arguments)."""
        return cursors.encode(_listing(**filters), [position])

    def events(
        self,
        profile_id: UUID | str | None = None,
        actor: str | None = None,
        event_type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_position: int | None = None,
        up_to_position: int | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[AuditRow]:
        """The event timeline in log order. ``since`` is inclusive, ``until`` exclusive; ``after_position``
        exclusive, ``up_to_position`` inclusive. ``event_type`` is like ``"Profile.Created"``."""
        limit = checked_limit(limit)
        where: list[str] = []
        params: dict[str, Any] = {"limit": limit + 1}
        if not add_equalities(where, params, profile_id, actor=actor, event_type=event_type):
            return Page(items=(), next_cursor=None)
        if since is not None:
            params["since"] = since
            where.append("recorded_at >= :since")
        if until is not None:
            params["until"] = until
            where.append("recorded_at < :until")
        after = after_position or 0
        listing = _listing(profile_id, actor, event_type, since, until, up_to_position)  # (not ``after``)
        if cursor is not None:
            (from_cursor,) = cursors.decode(cursor, listing, (int,))
            after = max(after, from_cursor)
        params["after"] = after
        where.append("position > :after")
        if up_to_position is not None:
            params["up_to"] = up_to_position
            where.append("position <= :up_to")
        rows = self._rows(AuditRow, self._all(
            f"SELECT {AUDIT.select()} FROM audit_events WHERE {' AND '.join(where)} ORDER BY position LIMIT :limit",
            params,
        ))
        next_cursor = cursors.encode(listing, [rows[limit - 1].position]) if len(rows) > limit else None
        return Page(items=tuple(rows[:limit]), next_cursor=next_cursor)
