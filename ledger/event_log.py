"""The log as its readers name it: the event types it can hold, and the positions it ever reached."""

from __future__ import annotations

from eventsourcing.domain import Aggregate

from ledger.access import AccessTokens
from ledger.domainmodel import ActiveSlot, Execution, Profile, ProfileName
from ledger.errors import ValidationError
from ledger.idempotency import IdempotencyKey


def _event_types(*aggregates: type[Aggregate]) -> tuple[str, ...]:
    """Every event type the log can hold, as the audit read model names them (``Profile.Created``): each event
    class of each aggregate, less the ``Created`` the library declares for one created by an event of its own."""
    types = []
    for aggregate in aggregates:
        events = [(name, value) for name, value in vars(aggregate).items()
                  if isinstance(value, type) and issubclass(value, aggregate.Event) and value is not aggregate.Event]
        created_otherwise = any(issubclass(value, Aggregate.Created) and name != "Created" for name, value in events)
        types += [f"{aggregate.__name__}.{name}" for name, _ in events if not (name == "Created" and created_otherwise)]
    return tuple(sorted(types))


EVENT_TYPES = _event_types(Profile, ProfileName, ActiveSlot, Execution, AccessTokens, IdempotencyKey)


def checked_event_type(event_type: str | None, name: str) -> None:
    """An event type filter names one of :data:`EVENT_TYPES` (empty: none)."""
    if event_type is not None and event_type.strip() and event_type.strip() not in EVENT_TYPES:
        raise ValidationError(f"{name} {event_type[:100]!r} is no event type of this log: one of "
                              f"{', '.join(EVENT_TYPES)}", field=name)


def refuse_past_head(position: int | None, head: int, name: str) -> None:
    """A position to start after (named ``name`` where it was given) is one this log reached: past its head, the
    reader would wait for events this log never held (a database restored from an older copy, another ledger's)."""
    if position is not None and position > head:
        raise ValidationError(f"{name} {position} is past the log's head ({head}): this log never held it (a database "
                              "restored from an older copy, or another ledger's); start again from 0 or the head",
                              field=name)
