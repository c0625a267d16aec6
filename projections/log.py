"""Reading the ledger's event log in batches: notifications decoded once into domain events.

:meth:`EventLog.read` reads one batch through the library's recorder (the live workers). :meth:`EventLog.scan`
reads the whole log for a rebuild: on PostgreSQL through one server-side cursor, decoded by
:class:`FastDecoder`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent, find_id_convertor
from eventsourcing.utils import resolve_topic

from ledger.application import ProfileLedger
from ledger.errors import SigningKeyError
from ledger.settings import Database
from ledger.signing import SIGNING_KEY_ENV
from ledger.signing.records import Sealed
from projections.projection import UndecodableEvent


@dataclass(frozen=True)
class Batch:
    """The events after position ``after`` up to position ``end`` (ids can have gaps)."""

    after: int
    end: int
    events: list[tuple[int, Any]]

    def since(self, position: int) -> list[tuple[int, Any]]:
        return [(p, e) for p, e in self.events if p > position]


class FastDecoder:
    """Stored events to domain events, as the library's mapper makes them, with msgspec parsing the JSON.

    The library's JSON transcoder calls a Python hook for every JSON object; here msgspec parses and only the
    ``{"_type_", "_data_"}`` objects go through the transcoder's own transcodings. Upcasting is the library's.
    A mapper with a cipher or a compressor, another transcoder, or state msgspec refuses (NaN, say) is left
    to the mapper itself. The signing mapper's check (:mod:`ledger.signing`) runs first, as in the mapper.
    """

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        transcoder = mapper.transcoder
        self.enabled = type(transcoder) is JSONTranscoder and not mapper.cipher and not mapper.compressor
        self.transcodings = transcoder.names if self.enabled else {}
        self._classes: dict[str, tuple[type, Any, int]] = {}
        self._decode = msgspec.json.Decoder().decode
        self._open = getattr(mapper, "open_state", None)

    def __call__(self, originator_id: Any, originator_version: int, topic: str, state: bytes) -> Any:
        if not self.enabled:
            return self._by_mapper(originator_id, originator_version, topic, state)
        payload = state if self._open is None else self._open(originator_id, originator_version, topic, state)
        try:
            event_state = self._decode(payload)
            # Transcoded values ({"_type_": …, "_data_": …}) are nearly always fields of their own (a time, an
            # id): revive those, and walk the nested containers only when the JSON holds more of them.
            expected = payload.count(b'"_type_"')
            found = 0
            containers = False
            transcodings = self.transcodings
            for key, value in event_state.items():
                kind = type(value)
                if kind is dict:
                    if len(value) == 2 and type(value.get("_data_")) is str and "_type_" in value:
                        event_state[key] = transcodings[value["_type_"]].decode(value["_data_"])
                        found += 1
                    else:
                        containers = True
                elif kind is list:
                    containers = True
            if found < expected and containers:
                for key, value in event_state.items():
                    kind = type(value)
                    if kind is dict or kind is list:
                        event_state[key] = self._revive(value)
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            return self._by_mapper(originator_id, originator_version, topic, state)
        found = self._classes.get(topic)
        if found is None:
            cls = resolve_topic(topic)
            found = self._classes[topic] = (cls, find_id_convertor(cls, type(originator_id)),
                                            getattr(cls, "class_version", 1))
        cls, id_convertor, class_version = found
        event_state["originator_id"] = id_convertor(originator_id)
        event_state["originator_version"] = originator_version
        from_version = event_state.pop("class_version", 1)
        while from_version < class_version:
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(event_state)
            from_version += 1
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", event_state)
        return event

    def or_undecodable(self, originator_id: Any, originator_version: int, topic: str, state: bytes) -> Any:
        """The domain event, or an :class:`UndecodableEvent` holding why it cannot be decoded."""
        try:
            return self(originator_id, originator_version, topic, state)
        except Exception as error:  # noqa: BLE001 - parked by every read model, with this error
            return UndecodableEvent(originator_id, originator_version, topic, error)

    def _revive(self, value: Any) -> Any:
        """What the transcoder's object hook does, inner objects first."""
        if type(value) is list:
            return [self._revive(item) if type(item) in (dict, list) else item for item in value]
        for key, item in value.items():
            if type(item) in (dict, list):
                value[key] = self._revive(item)
        if len(value) == 2 and "_type_" in value and "_data_" in value:
            return self.transcodings[value["_type_"]].decode(value["_data_"])
        return value

    def _by_mapper(self, originator_id: Any, originator_version: int, topic: str, state: bytes) -> Any:
        stored = StoredEvent(originator_id=originator_id, originator_version=originator_version, topic=topic,
                             state=bytes(state))
        return self.mapper.to_domain_event(stored)


def _ahead(fetch: Callable[[], list[Any]]) -> Iterator[list[Any]]:
    """``fetch()`` until it returns nothing, one call ahead in a thread: the server (and the network) work on
    the next batch while the caller works on this one (the wait releases the GIL)."""
    ready: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def fetch_all() -> None:
        try:
            while not stop.is_set():
                rows = fetch()
                _put(rows)
                if not rows:
                    return
        except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
            _put(error)

    def _put(item: Any) -> None:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    fetcher = threading.Thread(target=fetch_all, daemon=True, name="projections-scan")
    fetcher.start()
    try:
        while True:
            item = ready.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                return
            yield item
    finally:
        stop.set()
        fetcher.join()


class EventLog:
    """The log reader the read side is given: read after a position, scan, head.

    A process's composition root hands it the process's one application (``app``), whose recorder and mapper
    it reads through; without one it opens an application of its own (closed with it)."""

    def __init__(self, database: Database, *, pool_size: int = 2, app: ProfileLedger | None = None) -> None:
        self.database = database
        self._owns_app = app is None
        self.app = app if app is not None else ProfileLedger(env=database.eventsourcing_env(pool_size=pool_size))
        self.recorder = self.app.recorder
        self.mapper = self.app.mapper
        self.decode = FastDecoder(self.mapper)
        self.channel: str | None = getattr(self.recorder, "channel_name", None)
        schema = getattr(self.recorder.datastore, "schema", None)
        self.events_table = f"{schema}.{self.recorder.events_table_name}" if schema else self.recorder.events_table_name

    def require_its_key(self) -> None:
        """Refuse (:class:`SigningKeyError`) when this process's signing key is not the one the log is signed with
        (or there is none): read with it, every event would be set aside, and the read models made from them
        would be empty. A key named by ``LEDGER_SIGNING_KEY`` is read now even for an empty log: unreadable, no
        write could ever commit."""
        first = self.recorder.select_notifications(1, 1)
        sealed = Sealed.parse(first[0].state) if first else None
        keys = self.mapper.keys
        if sealed is None and keys.named:
            keys.key_id  # noqa: B018 - loads the key: SigningKeyError if it cannot be read
        if sealed is not None and sealed.key_id != keys.key_id:  # key_id loads the key: SigningKeyError if none
            raise SigningKeyError(
                f"the log is signed by key {sealed.key_id.hex()}, not by this process's key {keys.key_id.hex()}: "
                f"set {SIGNING_KEY_ENV} to the key it was written with", key_id=sealed.key_id.hex()
            )

    def read(self, after: int, limit: int) -> Batch:
        notifications = self.recorder.select_notifications(after, limit, inclusive_of_start=False)
        events = [(n.id, self._to_domain_event(n)) for n in notifications]
        return Batch(after=after, end=events[-1][0] if events else after, events=events)

    def event_at(self, position: int) -> Any:
        """The event at ``position`` (an :class:`UndecodableEvent` if it cannot be decoded)."""
        notifications = self.recorder.select_notifications(position, 1, stop=position)
        if not notifications:
            raise LookupError(f"no event at position {position}")
        return self._to_domain_event(notifications[0])

    def later_versions(self, originator_id: str, version: int) -> set[int]:
        """The versions of a stream after ``version``."""
        return {stored.originator_version for stored in self.recorder.select_events(UUID(originator_id), gt=version)}

    def _to_domain_event(self, notification: Any) -> Any:
        try:
            return self.mapper.to_domain_event(notification)
        except Exception as error:  # noqa: BLE001 - parked by every read model, with this error
            return UndecodableEvent(notification.originator_id, notification.originator_version, notification.topic,
                                    error)

    def scan(self, after: int, batch_size: int) -> Iterator[Batch]:
        """Every event after ``after``, in batches (one snapshot of the log on PostgreSQL)."""
        if not self.database.is_postgres:
            while (batch := self.read(after, batch_size)).events:
                yield batch
                after = batch.end
            return
        from psycopg.rows import tuple_row
        from psycopg.sql import SQL, Identifier

        query = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{} "
            "WHERE notification_id > %s ORDER BY notification_id"
        ).format(Identifier(self.recorder.datastore.schema), Identifier(self.recorder.events_table_name))
        decode = self.decode.or_undecodable
        with self.recorder.datastore.get_connection() as conn, conn.transaction():
            # The library's pool ends transactions idle for a few seconds; this one idles while a batch is applied.
            conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
            with conn.cursor(name="projections_rebuild_scan", row_factory=tuple_row, binary=True) as cursor:
                cursor.itersize = batch_size
                cursor.execute(query, (after,))
                for rows in _ahead(lambda: cursor.fetchmany(batch_size)):
                    events = [(row[0], decode(row[1], row[2], row[3], row[4])) for row in rows]
                    yield Batch(after=after, end=events[-1][0], events=events)
                    after = events[-1][0]

    def head(self) -> int:
        return self.recorder.max_notification_id() or 0

    def close(self) -> None:
        if self._owns_app:
            self.app.close()
