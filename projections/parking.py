"""Parked events: an event a read model cannot apply is set aside with its error; the read model goes on.

A read model's batch that fails for a reason other than an unreachable database (a value its column cannot
hold, a handler that raises, an event that cannot be decoded) is applied again one event at a time, each in
a savepoint: the events that fail are *parked* — a row in ``projections_parked`` with the read model, the log
position, the event type and the error — and every other event is applied as usual, so the read model's
position still reaches the head of the log. A parked event stays parked until it is retried
(:meth:`ParkingRecorder.retry_parked`, ``ledger projections retry``) or a rebuild applies it.

An unreachable database (connection lost, pool exhausted, lock or statement timeout) parks nothing: the batch
is retried later, as before.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import eventsourcing.persistence as persistence
import msgspec
import psycopg

from projections.projection import ReadModelProjection, UndecodableEvent, event_type_name
from projections.tables import BigInt, Table, reader

logger = logging.getLogger(__name__)

PARKED_TABLE = "projections_parked"
ERROR_MAX = 1000  # characters of an error message kept with a parked event

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    persistence.OperationalError,
    persistence.InterfaceError,
    psycopg.OperationalError,  # connection lost, a lock or statement timeout, the pool's timeout
    psycopg.InterfaceError,
    sqlite3.OperationalError,  # "database is locked"
    OSError,
)


def is_transient(error: BaseException) -> bool:
    """The database cannot be reached or is busy now: retry the batch later (nothing to park)."""
    return isinstance(error, TRANSIENT_ERRORS)


def describe(error: BaseException) -> str:
    """``Type: first line of the message``, bounded."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0] if message else ''}"[:ERROR_MAX]


class ParkedEvent(msgspec.Struct, frozen=True):
    projection: str
    position: BigInt
    event_type: str
    originator_id: str
    error: str
    parked_at: datetime
    attempts: int


PARKED = Table(PARKED_TABLE, ParkedEvent, key=("projection", "position"))


SUPERSEDED = (
    "later events of its stream were applied since, so applying it now would set the rows back: rebuild the "
    "read model (ledger rebuild NAME) to apply it in order"
)


class RetryOutcome(msgspec.Struct, frozen=True):
    parked: ParkedEvent
    applied: bool
    error: str | None = None


class ParkingRecorder:
    """Mixed into the read-model recorders (:mod:`projections.store`): the parked table and what uses it."""

    dialect: Any
    datastore: Any

    # ``_lock(curs, name, wait=...)``, ``_write(curs, suffix, ops)``, ``schema_lock(curs)`` and
    # ``ddl(table, physical)`` come from the read-model recorder.

    # -- schema ---------------------------------------------------------------------------------------
    def create_parked_table(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            self.schema_lock(curs)  # type: ignore[attr-defined]  # processes starting together race on CREATE
            curs.execute(self.ddl(PARKED, PARKED_TABLE)[0])

    # -- applying with isolation ----------------------------------------------------------------------
    @contextmanager
    def _savepoint(self, curs: Any) -> Iterator[None]:
        curs.execute("SAVEPOINT ledger_event")
        try:
            yield
        except BaseException:
            curs.execute("ROLLBACK TO SAVEPOINT ledger_event")
            raise
        curs.execute("RELEASE SAVEPOINT ledger_event")

    def _write_each(
        self, curs: Any, projection: ReadModelProjection, suffix: str, key: str, events: Sequence[tuple[int, Any]]
    ) -> None:
        """Apply the events one at a time, each in a savepoint; park (under ``key``) those that fail."""
        for position, event in events:
            try:
                with self._savepoint(curs):
                    self._write(curs, suffix, projection.ops_for([(position, event)]))
            except Exception as error:
                if is_transient(error):
                    raise
                self._park(curs, key, position, event, error)

    def _write_guarded(
        self, curs: Any, projection: ReadModelProjection, suffix: str, key: str, events: Sequence[tuple[int, Any]]
    ) -> None:
        """Apply the events together in a savepoint; if that fails, one at a time (see :meth:`_write_each`)."""
        try:
            with self._savepoint(curs):
                self._write(curs, suffix, projection.ops_for(events))
        except Exception as error:
            if is_transient(error):
                raise
            self._write_each(curs, projection, suffix, key, events)

    def _park(self, curs: Any, key: str, position: int, event: Any, error: BaseException) -> None:
        reason = describe(error)
        event_type = event.topic if isinstance(event, UndecodableEvent) else event_type_name(event)
        logger.error("read model %s parked the event at position %d (%s): %s", key, position, event_type, reason)
        sql = self.dialect.compile(
            f"INSERT INTO {PARKED_TABLE} (projection, position, event_type, originator_id, error, parked_at, attempts)"
            " VALUES (:projection, :position, :event_type, :originator_id, :error, :parked_at, 1)"
            " ON CONFLICT (projection, position) DO UPDATE SET error = excluded.error,"
            f" parked_at = excluded.parked_at, attempts = {PARKED_TABLE}.attempts + 1"
        )
        curs.execute(sql, self.dialect.parameters({
            "projection": key,
            "position": position,
            "event_type": event_type,
            "originator_id": str(getattr(event, "originator_id", "")),
            "error": reason,
            "parked_at": datetime.now(UTC),
        }))

    def _note_failure(self, curs: Any, key: str, position: int, error: BaseException) -> None:
        reason = describe(error)
        logger.error("read model %s: the parked event at position %d still fails: %s", key, position, reason)
        curs.execute(
            self.dialect.compile(
                f"UPDATE {PARKED_TABLE} SET error = :error, attempts = attempts + 1"
                " WHERE projection = :key AND position = :position"
            ),
            {"error": reason, "key": key, "position": position},
        )

    # -- rebuilds ---------------------------------------------------------------------------------------
    def _clear_parked(self, curs: Any, key: str) -> None:
        curs.execute(self.dialect.compile(f"DELETE FROM {PARKED_TABLE} WHERE projection = :key"), {"key": key})

    def _move_parked(self, curs: Any, from_key: str, to_key: str) -> None:
        """A rebuild's parked events replace those of the read model it replaces."""
        self._clear_parked(curs, to_key)
        curs.execute(
            self.dialect.compile(f"UPDATE {PARKED_TABLE} SET projection = :to_key WHERE projection = :from_key"),
            {"to_key": to_key, "from_key": from_key},
        )

    # -- inspecting and retrying ----------------------------------------------------------------------
    def parked(self, names: Iterable[str] | None = None) -> list[ParkedEvent]:
        """The parked events (of the named read models), in log order."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT {PARKED.select()} FROM {PARKED_TABLE} ORDER BY position, projection")
            rows = curs.fetchall()
        read, wanted = reader(ParkedEvent, self.dialect), None if names is None else set(names)
        return [read(row) for row in rows if wanted is None or row["projection"] in wanted]

    def parked_counts(self) -> dict[str, int]:
        """How many events each read model has parked (read models with none are left out)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT projection, COUNT(*) AS parked FROM {PARKED_TABLE} GROUP BY projection")
            return {row["projection"]: int(row["parked"]) for row in curs.fetchall()}

    def retry_parked(
        self,
        projection: ReadModelProjection,
        read_event: Callable[[int], Any],
        later_versions: Callable[[str, int], set[int]],
        position: int | None = None,
    ) -> list[RetryOutcome]:
        """Apply the projection's parked events again (or the one at ``position``), in log order, onto its
        current rows, under its lock: those that apply leave the parked table, the others keep their place
        with the new error. ``read_event(position)`` reads one event from the log; ``later_versions(originator,
        version)`` the versions its stream has after that one.

        An event is applied only if nothing of its stream was applied after it (what follows it is parked too,
        or absent): applied after a later revision, it would set the row back to what the revision replaced. It
        stays parked, and a rebuild (``ledger rebuild NAME``) applies it in order."""
        outcomes: list[RetryOutcome] = []
        everything = self.parked([projection.name])
        waiting = [p for p in everything if position is None or p.position == position]
        if not waiting:
            return outcomes
        with self.datastore.transaction(commit=True) as curs:
            self._lock(curs, projection.name, wait=True)
            kept = {p.position for p in everything}  # parked, and staying so unless applied here
            for parked in waiting:
                kept.discard(parked.position)
                try:
                    event = read_event(parked.position)
                    if not isinstance(event, UndecodableEvent) and self._applied_after(
                        event, later_versions, everything, kept, read_event
                    ):
                        kept.add(parked.position)
                        outcomes.append(RetryOutcome(parked, applied=False, error=SUPERSEDED))
                        continue
                    with self._savepoint(curs):  # an undecodable event raises its error here (ops_for)
                        self._write(curs, "", projection.ops_for([(parked.position, event)]))
                except Exception as error:
                    if is_transient(error):
                        raise
                    kept.add(parked.position)
                    self._note_failure(curs, projection.name, parked.position, error)
                    outcomes.append(RetryOutcome(parked, applied=False, error=describe(error)))
                    continue
                curs.execute(
                    self.dialect.compile(
                        f"DELETE FROM {PARKED_TABLE} WHERE projection = :projection AND position = :position"
                    ),
                    {"projection": projection.name, "position": parked.position},
                )
                outcomes.append(RetryOutcome(parked, applied=True))
        return outcomes

    @staticmethod
    def _applied_after(
        event: Any,
        later_versions: Callable[[str, int], set[int]],
        parked: Sequence[ParkedEvent],
        kept: set[int],
        read_event: Callable[[int], Any],
    ) -> bool:
        """Whether the read model applied an event of ``event``'s stream that comes after it: one of the
        stream's later versions that is not parked (or is parked, but was applied by this retry)."""
        later = later_versions(str(event.originator_id), event.originator_version)
        if not later:
            return False
        still_parked = {
            read_event(p.position).originator_version
            for p in parked
            if p.position in kept and p.originator_id == str(event.originator_id)
        }
        return not later <= still_parked
