"""The library's mapper and event stores, with every record signed when stored and checked when read."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import EventStore, Mapper, Notification, Recording, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.sqlite import SQLiteAggregateRecorder
from psycopg.sql import SQL, Identifier

from ledger.chain import VerifyReport
from ledger.errors import SigningKeyError, TamperedRecordError
from ledger.signing.records import SigningKeys

logger = logging.getLogger("ledger.signing")


class SigningMapper(Mapper[UUID]):
    """The library's mapper, with every stored record signed, and checked (its MAC) when it is read."""

    def __init__(self, *args: Any, keys: SigningKeys, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keys = keys

    def to_stored_events(self, domain_events: Sequence[DomainEventProtocol[UUID]]) -> list[StoredEvent]:
        """The events of one save, signed together."""
        plain = [super(SigningMapper, self).to_stored_event(event) for event in domain_events]
        states = self.keys.seal_all([(s.originator_id, s.originator_version, s.topic, s.state) for s in plain])
        return [replace(s, state=state) for s, state in zip(plain, states)]

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        return self.to_stored_events([domain_event])[0]

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        payload = self.open_state(stored_event.originator_id, stored_event.originator_version, stored_event.topic,
                                  stored_event.state)
        return super().to_domain_event(replace(stored_event, state=payload))

    def open_state(self, originator_id: Any, originator_version: int, topic: str, state: bytes) -> bytes:
        """The library's stored state inside a signed record (raises :class:`TamperedRecordError`)."""
        return self.keys.open(originator_id, originator_version, topic, state)


class SigningEventStore(EventStore[UUID]):
    """The library's event store, with the events of each save signed together (one signature per save), and
    each stream read in order refused where a version is missing (an event deleted from the database), or where
    it ends before a version this process has seen of it (its last saves deleted): a stream never gets shorter.
    Once the log's events are found tampered with (by a walk, :meth:`walked`, or a read), nothing more is stored."""

    mapper: SigningMapper

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: dict[UUID, int] = {}
        """Each stream's last version this process has seen: read whole, saved, or walked (:meth:`saw`)."""
        self.tampered: str | None = None
        """What was found wrong with the log's events (``TAMPERED: …``): then this process stores nothing."""

    def get(  # type: ignore[override]
        self, originator_id: UUID, *, gt: int | None = None, lte: int | None = None, desc: bool = False,
        limit: int | None = None,
    ) -> Iterator[DomainEventProtocol[UUID]]:
        seen = self.seen.get(originator_id, 0)  # read before the events: what it says was committed by then
        events = super().get(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)
        if desc or limit is not None:
            return self._found_out(events if desc else _without_gaps(originator_id, events, after=gt or 0))
        return self._found_out(_without_gaps(originator_id, events, after=gt or 0,
                                             seen=seen if lte is None else min(seen, lte), saw=self.saw))

    def _found_out(self, events: Iterator[DomainEventProtocol[UUID]]) -> Iterator[DomainEventProtocol[UUID]]:
        """The events, as read; a record refused as tampering tells this process the log was tampered with."""
        try:
            yield from events
        except TamperedRecordError as error:
            self.found_tampered(f"TAMPERED: {error.message}")
            raise

    def walked(self, report: VerifyReport, streams: Mapping[UUID, int]) -> None:
        """A walk of the log with the ledger's key ended (``streams``: the last version of each stream it met): once
        one finds the log's events tampered with, this process stores nothing more (a bad snapshot is never used,
        and stops nothing)."""
        if report.ok or report.problem == "snapshot_forged":
            self.saw(streams)
        else:
            self.found_tampered(report.tampered())

    def found_tampered(self, what: str) -> None:
        """The log's events were found tampered with (``what``: ``TAMPERED: …``): from now on this process stores
        nothing (and its server accepts no token); ``on_tampered`` is told, once."""
        if self.tampered is None:
            self.tampered = what
            self.on_tampered(what)

    on_tampered: Callable[[str], None] = staticmethod(lambda what: None)  # type: ignore[assignment]

    def saw(self, streams: Mapping[UUID, int]) -> None:
        """These streams hold at least these versions (genuine: read, saved or walked by this process)."""
        for stream, version in streams.items():
            if version > self.seen.get(stream, 0):
                self.seen[stream] = version

    key_checked = False
    """Whether this process's key was found to be the one the log is written with (checked before its first save)."""

    def put(self, domain_events: Sequence[DomainEventProtocol[UUID]], **kwargs: Any) -> list[Recording[UUID]]:
        if self.tampered is not None:
            raise TamperedRecordError(f"nothing is recorded on a tampered log (restore the database): {self.tampered}")
        if not self.key_checked:
            self._refuse_another_key()
        stored_events = self.mapper.to_stored_events(domain_events)
        positions = self.recorder.insert_events(stored_events, **kwargs)
        if not positions:
            return []
        self.saw({event.originator_id: event.originator_version for event in domain_events})
        return [
            Recording(event, Notification(**vars(stored), id=position))
            for event, stored, position in zip(domain_events, stored_events, positions, strict=True)
        ]

    def _refuse_another_key(self) -> None:
        """A process given another key than the log's (a mistyped ``LEDGER_SIGNING_KEY``, another ledger's
        ``.ledger/`` in the working directory) would append records every reader refuses: it may not write."""
        head = self.recorder.max_notification_id()  # type: ignore[attr-defined]
        last = self.recorder.select_notifications(start=head, limit=1) if head else []  # type: ignore[attr-defined]
        if last and (found := self.mapper.keys.key_id_in(last[0].state)) not in (None, self.mapper.keys.key_id):
            raise SigningKeyError(
                f"this process's signing key ({self.mapper.keys.key_id.hex()}) is not the one this log is written "
                f"with ({found.hex()}): every process writing to one database needs the same key file "
                "(LEDGER_SIGNING_KEY); nothing was written"
            )
        self.key_checked = True


class CheckedSnapshotStore(EventStore[UUID]):
    """The snapshot store: a snapshot that fails its signature check, a row whose topic is no snapshot's (a genuine
    event copied into the snapshots table is signed too), or a snapshot not taken of this log (one from a copy of
    the database signed with the same key, whose history went on otherwise) is skipped with a warning (the
    aggregate is then replayed from its events, which are checked in turn), never used."""

    def __init__(self, *args: Any, topics: frozenset[str], events: EventStore[UUID], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.topics = topics
        self.events = events

    def opened(self, record: StoredEvent) -> DomainEventProtocol[UUID]:
        """A stored snapshot, decoded, once found signed and taken of this log: the event at its version is the one
        it was taken after (its time is the snapshot's ``modified_on``). Raises :class:`TamperedRecordError`."""
        snapshot = self.mapper.to_domain_event(record)
        at = list(self.events.get(record.originator_id, gt=record.originator_version - 1,
                                  lte=record.originator_version))
        if not at or at[0].timestamp != snapshot.state.get("_modified_on"):  # type: ignore[attr-defined]
            raise TamperedRecordError(f"the snapshot of {record.originator_id} at version "
                                      f"{record.originator_version} was not taken of this log's events")
        return snapshot

    def stored(self, originator_id: UUID, *args: Any, **kwargs: Any) -> list[StoredEvent]:
        """The stream's stored snapshots, undecoded: those whose topic is a snapshot's."""
        try:
            stored = self.recorder.select_events(originator_id, *args, **kwargs)
        except TamperedRecordError as error:  # a row that cannot even be read
            logger.warning("ignoring the snapshots of %s: %s", originator_id, error.message)
            return []
        for record in stored:
            if record.topic not in self.topics:
                logger.warning("ignoring a snapshot of %s at version %s: its topic %r is no snapshot's",
                               originator_id, record.originator_version, record.topic)
        return [record for record in stored if record.topic in self.topics]

    def versions(self, originator_id: UUID) -> list[int]:
        """The stream versions the stream's snapshots were taken at, in order, read without their states (a large
        profile has many, each as large as the profile)."""
        recorder = self.recorder
        if isinstance(recorder, PostgresAggregateRecorder):
            sql: Any = SQL("SELECT originator_version FROM {}.{} WHERE originator_id = %s ORDER BY 1").format(
                Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
            key: Any = originator_id
        elif isinstance(recorder, SQLiteAggregateRecorder):
            sql, key = f"SELECT originator_version FROM {recorder.events_table_name} WHERE originator_id = ? " \
                "ORDER BY 1", originator_id.hex  # (as the library spells it there)
        else:  # (in memory)
            return [record.originator_version for record in recorder.select_events(originator_id)]
        with recorder.datastore.transaction(commit=False) as curs:
            curs.execute(sql, (key,))
            return [row["originator_version"] for row in curs.fetchall()]

    def get(  # type: ignore[override]
        self, originator_id: UUID, *args: Any, **kwargs: Any
    ) -> list[DomainEventProtocol[UUID]]:
        snapshots = []
        for record in self.stored(originator_id, *args, **kwargs):
            try:
                snapshots.append(self.opened(record))
            except TamperedRecordError as error:
                logger.warning("ignoring a snapshot: %s", error.message)
        return snapshots


def refuse_a_gap(originator_id: UUID, previous: int, version: int) -> None:
    """A stream's versions run on one by one: one that skips a version had an event removed from the log."""
    if version != previous + 1:
        raise TamperedRecordError(
            f"stream {originator_id} goes from version {previous} to {version}: an event was removed from the log",
            originator_id=str(originator_id), originator_version=version,
        )


def _without_gaps(originator_id: UUID, events: Iterator[DomainEventProtocol[UUID]], after: int, seen: int = 0,
                  saw: Callable[[Mapping[UUID, int]], None] | None = None) -> Iterator[DomainEventProtocol[UUID]]:
    """The events of a stream read after version ``after``, refused (:class:`TamperedRecordError`) at the first
    that is not the next version (the library would stop there with an error of its own, read as a fault), and
    at the end when it ends before version ``seen``; ``saw`` is then told the version it ends at."""
    previous = after
    for event in events:
        refuse_a_gap(originator_id, previous, event.originator_version)
        previous = event.originator_version
        yield event
    if previous < seen:
        raise TamperedRecordError(
            f"stream {originator_id} ends at version {previous}, but this process has seen version {seen} of it: "
            "its last events were removed from the log", originator_id=str(originator_id), originator_version=seen,
        )
    if saw is not None:
        saw({originator_id: previous})
