"""Reading the ledger's event log in batches: notifications decoded once into domain events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.application import ProfileLedger
from ledger.settings import Database


@dataclass(frozen=True)
class Batch:
    """The events after position ``after`` up to position ``end`` (ids can have gaps)."""

    after: int
    end: int
    events: list[tuple[int, Any]]

    def since(self, position: int) -> list[tuple[int, Any]]:
        return [(p, e) for p, e in self.events if p > position]


class EventLog:
    def __init__(self, database: Database, *, pool_size: int = 2) -> None:
        self.app = ProfileLedger(env=database.eventsourcing_env(pool_size=pool_size))
        self.recorder = self.app.recorder
        self.mapper = self.app.mapper
        self.channel: str | None = getattr(self.recorder, "channel_name", None)

    def read(self, after: int, limit: int) -> Batch:
        notifications = self.recorder.select_notifications(after, limit, inclusive_of_start=False)
        events = [(n.id, self.mapper.to_domain_event(n)) for n in notifications]
        return Batch(after=after, end=events[-1][0] if events else after, events=events)

    def head(self) -> int:
        return self.recorder.max_notification_id() or 0

    def close(self) -> None:
        self.app.close()
