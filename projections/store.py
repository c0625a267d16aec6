"""Where read models are written: the library's tracking recorders, extended to write rows with positions.

Every batch is one transaction that writes the rows of one projection and its new position
(``_insert_tracking``, which refuses to move a position backwards). On PostgreSQL the transaction first takes
a per-projection advisory lock and re-reads the position under it, so several workers (several processes)
never apply the same events twice and never wait on one another; on SQLite the first statement takes the
database's write lock.

A batch that fails for any reason but an unreachable database is applied again one event at a time, and the
events that still fail are parked (:mod:`projections.parking`): one event never stops a read model.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from eventsourcing.persistence import InfrastructureFactory, PersistenceError, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import Environment

from ledger.recorders import text_as_found
from ledger.settings import Database
from projections.dialect import POSTGRES, SQLITE, Dialect, encode_json
from projections.log import Batch
from projections.memory import MemoryBuild
from projections.ops import Op, Statements
from projections.parking import ParkingRecorder, describe, is_transient
from projections.progress import CHANNEL as PROGRESS_CHANNEL
from projections.projection import ReadModelProjection
from projections.shares import Shares, connections_of
from projections.tables import Table

REBUILD_SUFFIX = "__next"
INLINE_SAVEPOINT = "ledger_inline_projection"
PIPELINE_BYTES_MAX = 64 * 1024
CLAIM_FUNCTION = "ledger_claim_read_models"
CLAIM_REFUSED = "LDG01"  # SQLSTATE: a read model is busy or behind, left to the worker (nothing is wrong)
CLAIM_FUNCTION_DDL = """CREATE OR REPLACE FUNCTION {function}(names text[], locks bigint[], previous bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE applied bigint;
BEGIN
    FOR i IN 1 .. coalesce(array_length(names, 1), 0) LOOP
        IF NOT pg_try_advisory_xact_lock(locks[i]) THEN
            RAISE EXCEPTION 'the read model % is busy', names[i] USING ERRCODE = '{refused}';
        END IF;
        SELECT t.notification_id INTO applied FROM {tracking} t WHERE t.application_name = names[i];
        IF coalesce(applied, 0) < coalesce(previous, 0) THEN
            RAISE EXCEPTION 'the read model % is behind the log', names[i] USING ERRCODE = '{refused}';
        END IF;
    END LOOP;
END $$"""
"""Takes the read models' locks (without waiting) and checks they applied every event up to ``previous``; each
statement of the function reads afresh, after the lock."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowDifference:
    """The first row (in log order) where a live read-model table differs from what the log makes of it.

    ``live`` and ``rebuilt`` are that row's columns in each (None: not there); ``position`` is the event that wrote
    it (the log's, unless only the live table has it); ``count``: how many rows (keys) differ, are missing or were
    added. ``problem``: what is wrong with the table as a whole (it is missing, or its columns are not the read
    model's), rather than with a row."""

    table: str
    key: dict[str, Any]
    position: int | None
    live: dict[str, Any] | None
    rebuilt: dict[str, Any] | None
    count: int
    problem: str | None = None

    def describe(self) -> str:
        row = ", ".join(f"{column}={value!r}" if isinstance(value, str) else f"{column}={value}"
                        for column, value in self.key.items())
        if self.problem is not None:
            return f"{self.table}: {self.problem}"
        if self.live is None:
            what = f"the row {row} that the log makes is missing"
        elif self.rebuilt is None:
            what = f"the row {row} is not made by the log"
        else:
            changed = [column for column in self.live if self.live[column] != self.rebuilt.get(column)]
            what = f"the row {row} differs from what the log makes of it in {', '.join(changed)}"
        rows = "1 row differs" if self.count == 1 else f"{self.count} rows differ"
        return f"{self.table}: {what} ({rows} in all)"


@dataclass(frozen=True)
class ReadModelComparison:
    """A live read model compared with one built afresh from the log, both at ``position`` (the live one's)."""

    projection: str
    position: int
    rebuilt: int  # the position the rebuild reached
    difference: RowDifference | None = None
    not_compared: str | None = None  # why the rows were not compared


def rebuild_key(name: str) -> str:
    return name + REBUILD_SUFFIX


def lock_id(name: str) -> int:
    """A stable 63-bit advisory lock id for a projection."""
    return int.from_bytes(hashlib.sha1(f"ledger.projection:{name}".encode()).digest()[:8], "big") >> 1


SCHEMA_LOCK = lock_id("__schema__")


class ReadModelRecorder(ParkingRecorder):
    """The dialect-independent part; mixed into the two library tracking recorders below."""

    dialect: Dialect
    datastore: Any
    tracking_table: str
    has_trigram: bool  # PostgreSQL with pg_trgm: the trigram indexes exist

    # ``_max_tracking_id(name, curs)`` and ``_insert_tracking(curs, tracking)`` come from the library recorder.

    @functools.cached_property
    def read_shares(self) -> Shares:
        """Each reader's share of the connections the read models are queried over."""
        return Shares(connections_of(self.datastore))

    # -- hooks per dialect: ``_lock``, ``_run(curs, sql, params)``, ``_rename_indexes(curs, table, old_prefix)``, and:
    def schema_lock(self, curs: Any) -> None:
        """Held while creating tables (processes starting together)."""

    def load_rows(self, curs: Any, table: Table, physical: str, rows: Iterable[dict[str, Any]]) -> None:
        """Rows (dicts with every column) into a table, in bulk (PostgreSQL: binary COPY)."""
        raise NotImplementedError

    # -- schema ---------------------------------------------------------------------------------------
    def missing_tables(self, names: Iterable[str]) -> set[str]:
        """Those of the tables named that do not exist."""
        with self.datastore.transaction(commit=False) as curs:
            missing = set()
            for name in names:
                curs.execute(self.dialect.table_exists, (name,))
                if not curs.fetchone()["found"]:
                    missing.add(name)
            return missing

    def create_read_model_tables(self, projections: Iterable[ReadModelProjection], suffix: str = "") -> None:
        """The tables not made yet, each with its indexes in one transaction. One made is left alone: its
        ``CREATE INDEX IF NOT EXISTS`` would wait for the writers in its table and hold up those after them, and,
        for two tables in one transaction, deadlocked with a writer holding the other (every CLI command runs
        this)."""
        self.create_parked_table()
        tables = [table for projection in projections for table in projection.tables]
        missing = self.missing_tables(table.name + suffix for table in tables)  # (one look for all of them)
        for table in tables:
            if table.name + suffix in missing:
                with self.datastore.transaction(commit=True) as curs:
                    self.schema_lock(curs)
                    for statement in self.ddl(table, table.name + suffix):
                        curs.execute(statement)

    def ddl(self, table: Table, physical: str) -> list[str]:
        """The table's DDL for this database: the table first, then its indexes."""
        ddl = table.ddl(postgres=self.dialect.is_postgres, trigram=self.has_trigram)
        return [self.dialect.compile(statement, {"table": physical}) for statement in ddl]

    def drop_tables(self, projection: ReadModelProjection, suffix: str) -> None:
        with self.datastore.transaction(commit=True) as curs:
            if suffix:  # a write first: SQLite takes its write lock at once (waiting its turn), not midway
                curs.execute(self._delete_tracking_sql(), {"name": rebuild_key(projection.name)})
                self._clear_parked(curs, rebuild_key(projection.name))
            for table in projection.tables:
                curs.execute(f"DROP TABLE IF EXISTS {table.name + suffix}")

    def _delete_tracking_sql(self) -> str:
        return self.dialect.compile(f"DELETE FROM {self.tracking_table} WHERE application_name = :name")

    # -- positions ------------------------------------------------------------------------------------
    def positions(self, names: Iterable[str]) -> dict[str, int]:
        return self.positions_and_head(names)[0]

    def positions_and_head(self, names: Iterable[str], events_table: str | None = None) -> tuple[dict[str, int], int]:
        """The read models' positions and, with ``events_table``, the log's head, in one query."""
        names = list(names)
        head = f"(SELECT max({self.dialect.event_id}) FROM {events_table})" if events_table else "0"
        sql = (f"SELECT {head} AS head, t.application_name, t.notification_id "
               f"FROM (SELECT 1) AS one LEFT JOIN {self.tracking_table} t ON 1 = 1")
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(sql)
            rows = curs.fetchall()
        found = {row["application_name"]: row["notification_id"] for row in rows}
        return {name: found.get(name) or 0 for name in names}, (rows[0]["head"] or 0) if rows else 0

    # -- applying events ------------------------------------------------------------------------------
    def apply_batch(
        self, projection: ReadModelProjection, batch: Batch, *, rebuilding: bool = False, wait: bool = False
    ) -> int | None:
        """Apply the batch's events this projection has not applied yet, and record the batch's end.

        Returns the projection's position afterwards, or None when another worker holds the projection
        (unless ``wait``, which waits for it).
        """
        return self.apply_batches([projection], batch, rebuilding=rebuilding, wait=wait)[projection.name]

    def apply_batches(self, projections: Iterable[ReadModelProjection], batch: Batch, *, rebuilding: bool = False,
                      wait: bool = False) -> dict[str, int | None]:
        """:meth:`apply_batch` for several projections in one transaction: one commit for all of them, each
        projection under its own lock and with its own tracking position. Without ``wait``, a projection another
        worker holds is skipped (None); the others are applied."""
        projections = list(projections)
        suffix = REBUILD_SUFFIX if rebuilding else ""
        for isolate in (False, True):
            try:
                with self.datastore.transaction(commit=True) as curs:
                    return {
                        projection.name: self._apply(
                            curs, projection, batch, rebuild_key(projection.name) if rebuilding else projection.name,
                            suffix, wait=wait, isolate=isolate,
                        )
                        for projection in projections
                    }
            except Exception as error:
                if isolate or is_transient(error):
                    raise
                logger.warning("a read-model batch (positions %d to %d) failed (%s); applying its events one at a time",
                               batch.after + 1, batch.end, describe(error))
        raise AssertionError("unreachable")

    def _apply(
        self, curs: Any, projection: ReadModelProjection, batch: Batch, key: str, suffix: str, *, wait: bool,
        isolate: bool = False,
    ) -> int | None:
        """Apply the batch under the projection's lock; with ``isolate``, event by event, parking failures."""
        if not self._lock(curs, key, wait=wait):
            return None
        current = self._max_tracking_id(key, curs) or 0  # type: ignore[attr-defined]
        if current >= batch.end or current < batch.after:
            return current  # nothing new for us here, or the batch does not start where we are
        if isolate:
            self._write_each(curs, projection, suffix, key, batch.since(current))
        else:
            self._write(curs, suffix, projection.ops_for(batch.since(current)))
        self._insert_tracking(curs, Tracking(key, batch.end))  # type: ignore[attr-defined]
        return batch.end

    # -- inline, in the transaction that inserts the events (projections.inline) -----------------------
    def write_inline(self, curs: Any, ops: list[tuple[int, Op]], names: Sequence[str], events_table: str,
                     positions: Sequence[int], size: int) -> bool:
        """After a savepoint: when every read model of ``names`` can be locked at once and has applied every
        event before ``positions[0]``, write ``ops`` and move them to ``positions[-1]``; else write nothing and
        return False. ``size``: the events' bytes. Whatever else fails can be undone with :meth:`abandon_inline`."""
        raise NotImplementedError

    def abandon_inline(self, curs: Any) -> None:
        """Undo everything since :meth:`write_inline`'s savepoint (the events inserted before it stay)."""
        curs.execute(f"ROLLBACK TO SAVEPOINT {INLINE_SAVEPOINT}")

    def start_rebuilt(self, projection: ReadModelProjection) -> None:
        """Fresh, bare rebuild tables (no indexes yet) for :meth:`copy_rebuilt` to fill."""
        with self.datastore.transaction(commit=True) as curs:
            self._lock(curs, rebuild_key(projection.name), wait=True)
            for table in projection.tables:
                physical = table.name + REBUILD_SUFFIX
                curs.execute(f"DROP TABLE IF EXISTS {physical}")
                curs.execute(self.ddl(table, physical)[0])

    def copy_rebuilt(self, projection: ReadModelProjection, rows: Mapping[str, list[dict[str, Any]]]) -> None:
        """Append rows (table name → rows) to the bare rebuild tables, in bulk, in one transaction."""
        with self.datastore.transaction(commit=True) as curs:
            for table in projection.tables:
                self.load_rows(curs, table, table.name + REBUILD_SUFFIX, rows.get(table.name, []))

    def finish_rebuilt(self, build: MemoryBuild, position: int) -> None:
        """The rows that left memory last, the deferred operations, the rows still in memory, the indexes and the
        position (see :mod:`projections.memory` for the order). One transaction, after :meth:`start_rebuilt` and
        any number of :meth:`copy_rebuilt`."""
        projection = build.projection
        key = rebuild_key(projection.name)
        out = build.take_out()
        with self.datastore.transaction(commit=True) as curs:
            self._lock(curs, key, wait=True)
            for table in projection.tables:
                physical = table.name + REBUILD_SUFFIX
                indexes = self.ddl(table, physical)[1:]
                deferred = [(at, op) for at, op in build.deferred if op.table is table]
                self.load_rows(curs, table, physical, out[table.name])
                if deferred:  # on the indexed table: each one finds its rows by them
                    for statement in indexes:
                        curs.execute(statement)
                    self._statements(REBUILD_SUFFIX).run(curs, self._run, deferred, deferred=True)
                self.load_rows(curs, table, physical, list(build.rows[table.name].values()))
                if not deferred:
                    for statement in indexes:
                        curs.execute(statement)
            curs.execute(self._delete_tracking_sql(), {"name": key})
            if position:
                self._insert_tracking(curs, Tracking(key, position))  # type: ignore[attr-defined]

    def swap_in_rebuilt(self, projection: ReadModelProjection, read: Any, batch_size: int) -> int:
        """Replace the live tables by the rebuilt ones, in one transaction, after applying the rest of the log.

        ``read(after, limit)`` reads the log. The live worker is kept out by the projection's lock meanwhile;
        afterwards it continues from the rebuilt position.
        """
        key = rebuild_key(projection.name)
        with self.datastore.transaction(commit=True) as curs, text_as_found(curs):  # (a row made unreadable: named)
            self._lock(curs, projection.name, wait=True)
            position = self._catch_up_rebuilt(curs, projection, read, batch_size)
            for table in projection.tables:
                physical = table.name + REBUILD_SUFFIX
                curs.execute(f"DROP TABLE IF EXISTS {table.name}")
                curs.execute(f"ALTER TABLE {physical} RENAME TO {table.name}")
                self._rename_indexes(curs, table, physical)
            curs.execute(self._delete_tracking_sql(), {"name": key})
            curs.execute(self.dialect.compile(
                f"INSERT INTO {self.tracking_table} (application_name, notification_id) VALUES (:name, :position) "
                "ON CONFLICT (application_name) DO UPDATE SET notification_id = excluded.notification_id"
            ), {"name": projection.name, "position": position})
            self._move_parked(curs, key, projection.name)
        return position

    def _catch_up_rebuilt(self, curs: Any, projection: ReadModelProjection, read: Any, batch_size: int,
                          until: int | None = None) -> int:
        """Apply the log after the rebuilt position to the rebuild tables, up to ``until`` (default: its end), as
        the live path would (parking what fails); returns the position they reached."""
        key = rebuild_key(projection.name)
        position = self._max_tracking_id(key, curs) or 0  # type: ignore[attr-defined]
        while until is None or position < until:
            batch: Batch = read(position, batch_size)
            events = [(at, event) for at, event in batch.events if until is None or at <= until]
            if not events:
                break
            self._write_guarded(curs, projection, REBUILD_SUFFIX, key, events)
            position = events[-1][0]
        return position

    HOOKS_SQL: str
    """(kind, name, on_table, runs) of every trigger, rule and event trigger the database holds (not an
    extension's own)."""

    def foreign_hooks(self, ours: set[tuple[str, str, str]], tables: set[str]) -> list[str]:
        """What the database would run as ``tables`` (those a comparison writes or reads) are written that the
        ledger did not make there (``ours``: its (name, table, function) triggers): a trigger, a rule, an event
        trigger (which attaches itself to new tables). It could change the live read models and the tables they are
        compared with alike, so a comparison is no proof while one is there."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self.HOOKS_SQL)
            hooks = [(row["kind"], row["name"], row["on_table"], row["runs"]) for row in curs.fetchall()]
        return [f"{kind} {name}" + (f" on {table}" if table else "") for kind, name, table, runs in hooks
                if not table or table in tables and (name, table, runs) not in ours]

    def compare_rebuilt(self, projection: ReadModelProjection, read: Any, batch_size: int) -> ReadModelComparison:
        """Compare the live tables with the rebuilt ones, both at the live read model's position.

        One transaction under the projection's lock: the live worker and the inline writers (which then leave
        their events to the worker) are kept out, so the live position cannot move while the rebuild tables are
        brought up to it and compared (the build stopped at or before it). A live position past every event there
        is is a difference of its own. The rebuild tables are left as they are (the caller drops them)."""
        key = rebuild_key(projection.name)
        with self.datastore.transaction(commit=True) as curs, text_as_found(curs):  # (a row made unreadable: named)
            self._lock(curs, projection.name, wait=True)
            live = self._max_tracking_id(projection.name, curs) or 0  # type: ignore[attr-defined]
            rebuilt = self._max_tracking_id(key, curs) or 0  # type: ignore[attr-defined]
            if rebuilt > live:
                return ReadModelComparison(projection.name, live, rebuilt, not_compared=(
                    f"its position moved back to {live} while the log was read to {rebuilt}"))
            if not live and not all(self._table_exists(curs, table.name) for table in projection.tables):
                return ReadModelComparison(projection.name, live, rebuilt, not_compared="it was never made")
            rebuilt = self._catch_up_rebuilt(curs, projection, read, batch_size, until=live)
            if rebuilt < live:  # its position was moved past every event there is: what it holds is not the log's
                return ReadModelComparison(projection.name, live, rebuilt, RowDifference(
                    self.tracking_table, {"application_name": projection.name}, live, {"notification_id": live},
                    {"notification_id": rebuilt}, count=1))
            differences = (self._first_difference(curs, table) for table in projection.tables)
            return ReadModelComparison(projection.name, live, rebuilt, next(filter(None, differences), None))

    def _first_difference(self, curs: Any, table: Table) -> RowDifference | None:
        """The first row (in log order) where the live table and its rebuild differ, with how many do; None when
        they hold the same rows."""
        if not self._table_exists(curs, table.name):
            return RowDifference(table.name, {}, None, None, None, count=0, problem="the table is missing")
        curs.execute(self.dialect.table_columns, (table.name,))
        columns = {row["name"] for row in curs.fetchall()}
        if columns != set(table.types):
            changed = ", ".join(sorted(columns ^ set(table.types)))
            return RowDifference(table.name, {}, None, None, None, count=0,
                                 problem=f"its columns are not the read model's ({changed})")
        live, rebuilt = table.name, table.name + REBUILD_SUFFIX
        only_live = self._rows_only_in(curs, table, live, rebuilt)
        only_rebuilt = self._rows_only_in(curs, table, rebuilt, live)
        if not only_live and not only_rebuilt:
            return None
        row = min((*only_live[:1], *only_rebuilt[:1]), key=lambda found: found["position"])
        keys = {column: row[column] for column in table.key}
        count = self._count_differing(curs, table, live, rebuilt)
        live_row, rebuilt_row = (self._row_by_key(curs, table, physical, keys) for physical in (live, rebuilt))
        position = (rebuilt_row or live_row or row)["position"]
        return RowDifference(table.name, keys, position, live_row, rebuilt_row, count=count)

    def _table_exists(self, curs: Any, name: str) -> bool:
        curs.execute(self.dialect.table_exists, (name,))
        return bool(curs.fetchone()["found"])

    def _comparable_columns(self, table: Table) -> str:
        """The table's columns for EXCEPT: PostgreSQL's ``json`` has no equality, its text (kept as written) does."""
        json_type = self.dialect.compile("{json}")
        return ", ".join(f"CAST({column} AS text) AS {column}" if kind == "{json}" and json_type == "json" else column
                         for column, (kind, _) in table.types.items())

    def _rows_only_in(self, curs: Any, table: Table, physical: str, other: str, limit: int = 1) -> list[Any]:
        columns = self._comparable_columns(table)
        curs.execute(f"SELECT {columns} FROM {physical} EXCEPT SELECT {columns} FROM {other} "
                     f"ORDER BY position LIMIT {int(limit)}")
        return curs.fetchall()

    def _count_differing(self, curs: Any, table: Table, live: str, rebuilt: str) -> int:
        """How many keys have a row that differs, is missing or was added."""
        columns, keys = self._comparable_columns(table), ", ".join(table.key)
        curs.execute(f"SELECT count(*) AS differing FROM (SELECT {keys} FROM (SELECT {columns} FROM {live} EXCEPT "
                     f"SELECT {columns} FROM {rebuilt}) AS only_live UNION SELECT {keys} FROM (SELECT {columns} "
                     f"FROM {rebuilt} EXCEPT SELECT {columns} FROM {live}) AS only_rebuilt) AS differing_keys")
        return int(curs.fetchone()["differing"])

    def _row_by_key(self, curs: Any, table: Table, physical: str, keys: Mapping[str, Any]) -> dict[str, Any] | None:
        where = " AND ".join(f"{column} = :{column}" for column in keys)
        curs.execute(self.dialect.compile(f"SELECT {self._comparable_columns(table)} FROM {physical} WHERE {where}"),
                     dict(keys))
        found = curs.fetchone()
        return None if found is None else dict(found)

    def _write(self, curs: Any, suffix: str, ops: list[tuple[int, Op]]) -> None:
        self._statements(suffix).run(curs, self._run, ops)

    def _statements(self, suffix: str) -> Statements:
        cache: dict[str, Statements] = self.__dict__.setdefault("_compiled", {})
        if suffix not in cache:
            cache[suffix] = Statements(self.dialect, suffix)
        return cache[suffix]


class PostgresReadModelRecorder(ReadModelRecorder, PostgresTrackingRecorder):
    dialect = POSTGRES
    HOOKS_SQL = (  # (a function of another schema is none of the ledger's, whatever its name)
        "SELECT 'trigger' AS kind, t.tgname AS name, c.relname AS on_table, CASE WHEN p.pronamespace ="
        " current_schema()::regnamespace THEN p.proname ELSE '' END AS runs FROM pg_trigger t"
        " JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid"
        " WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace"
        " UNION ALL SELECT 'rule', rulename, tablename, '' FROM pg_rules WHERE schemaname = current_schema()"
        " UNION ALL SELECT 'event trigger', e.evtname, '', '' FROM pg_event_trigger e WHERE e.evtenabled <> 'D'"
        " AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_event_trigger'::regclass"
        "  AND d.objid = e.oid AND d.deptype = 'e')"
    )

    def __init__(self, datastore: Any, *, tracking_table_name: str = "projections_tracking", **kwargs: Any):
        super().__init__(datastore, tracking_table_name=tracking_table_name, **kwargs)
        self.tracking_table = tracking_table_name
        self.has_trigram = False

    def create_table(self) -> None:
        for attempt in range(3):  # processes starting together can race on CREATE TABLE IF NOT EXISTS
            try:
                super().create_table()
                break
            except PersistenceError:
                if attempt == 2:
                    raise
                time.sleep(0.1 * (attempt + 1))
        with self.datastore.transaction(commit=True) as curs:
            self.schema_lock(curs)
            curs.execute(CLAIM_FUNCTION_DDL.format(function=CLAIM_FUNCTION, tracking=self.tracking_table,
                                                   refused=CLAIM_REFUSED))
        with contextlib.suppress(Exception):  # an optional speed-up: without it, search scans
            with self.datastore.transaction(commit=True) as curs:
                self.schema_lock(curs)
                curs.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
            self.has_trigram = curs.fetchone() is not None

    def schema_lock(self, curs: Any) -> None:
        curs.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))

    def _lock(self, curs: Any, name: str, *, wait: bool) -> bool:
        if wait:
            curs.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id(name),))
            return True
        curs.execute("SELECT pg_try_advisory_xact_lock(%s) AS locked", (lock_id(name),))
        return bool(curs.fetchone()["locked"])

    def write_inline(self, curs: Any, ops: list[tuple[int, Op]], names: Sequence[str], events_table: str,
                     positions: Sequence[int], size: int) -> bool:
        # One round trip in all (it runs under the events table's lock, where every round trip holds up every
        # writer): the claim, the writes and the new positions go in one pipeline, each statement prepared and
        # bound server-side; a claim that fails (CLAIM_REFUSED) stops the rest. Not for large rows: psycopg's
        # pipeline can stall on a payload it has not finished sending (see ledger.write_path).
        pipeline = curs.connection.pipeline() if size <= PIPELINE_BYTES_MAX else contextlib.nullcontext()
        try:
            with pipeline:
                curs.execute(f"SAVEPOINT {INLINE_SAVEPOINT}")
                curs.execute(
                    f"SELECT {CLAIM_FUNCTION}(%(names)s, %(locks)s, "
                    f"(SELECT max(notification_id) FROM {events_table} WHERE notification_id < %(first)s))",
                    {"names": list(names), "locks": [lock_id(name) for name in names], "first": positions[0]},
                )
                self._write(curs, "", ops)
                curs.execute(
                    f"WITH moved AS (INSERT INTO {self.tracking_table} (application_name, notification_id) "
                    "SELECT unnest(%(names)s::text[]), %(position)s ON CONFLICT (application_name) "
                    "DO UPDATE SET notification_id = excluded.notification_id) "
                    "SELECT pg_notify(%(channel)s, %(payload)s)",
                    {"names": list(names), "position": positions[-1], "channel": PROGRESS_CHANNEL,
                     "payload": str(positions[-1])},
                )
        except psycopg.DatabaseError as error:
            if error.sqlstate != CLAIM_REFUSED:
                raise
            self.abandon_inline(curs)
            return False
        return True

    def _run(self, curs: Any, sql: str, params: Sequence[dict[str, Any]]) -> None:
        if len(params) == 1:
            curs.execute(sql, params[0])
        else:
            curs.executemany(sql, params)

    def load_rows(self, curs: Any, table: Table, physical: str, rows: Iterable[dict[str, Any]]) -> None:
        if not rows:
            return
        # Binary COPY with the columns' types set: psycopg's C dumpers write each value, and the server reads
        # them without parsing text (JSON columns are encoded by msgspec, in C).
        from psycopg.types.json import set_json_dumps

        set_json_dumps(encode_json, curs)
        values_of = table.values_of
        with curs.copy(f"COPY {physical} ({', '.join(table.columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([self.dialect.compile(kind) for kind, _ in table.types.values()])
            for row in rows:
                copy.write_row(values_of(row))

    def _rename_indexes(self, curs: Any, table: Table, old_prefix: str) -> None:
        curs.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s",
            (table.name,),
        )
        for row in curs.fetchall():
            index = row["indexname"]
            if index.startswith(old_prefix):
                curs.execute(f"ALTER INDEX {index} RENAME TO {table.name + index[len(old_prefix):]}")


class SQLiteReadModelRecorder(ReadModelRecorder, SQLiteTrackingRecorder):
    dialect = SQLITE
    HOOKS_SQL = ("SELECT 'trigger' AS kind, name, tbl_name AS on_table, '' AS runs FROM sqlite_master"
                 " WHERE type = 'trigger'")
    tracking_table = "tracking"
    has_trigram = False

    def _lock(self, curs: Any, name: str, *, wait: bool) -> bool:
        # A write as the first statement takes SQLite's write lock (waiting up to the busy timeout), so the
        # position read next cannot be stale.
        curs.execute("UPDATE tracking SET notification_id = notification_id WHERE application_name = ?", (name,))
        return True

    def write_inline(self, curs: Any, ops: list[tuple[int, Op]], names: Sequence[str], events_table: str,
                     positions: Sequence[int], size: int) -> bool:
        curs.execute(f"SAVEPOINT {INLINE_SAVEPOINT}")
        curs.execute(f"SELECT max(rowid) AS previous FROM {events_table} WHERE rowid < ?", (positions[0],))
        previous = curs.fetchone()["previous"] or 0
        # SQLite has one writer at a time: the locks are this transaction's already.
        if any((self._max_tracking_id(name, curs) or 0) < previous for name in names):
            return False
        self._write(curs, "", ops)
        for name in names:
            self._insert_tracking(curs, Tracking(name, positions[-1]))
        return True

    def _run(self, curs: Any, sql: str, params: Sequence[dict[str, Any]]) -> None:
        curs.executemany(sql, params)

    def load_rows(self, curs: Any, table: Table, physical: str, rows: Iterable[dict[str, Any]]) -> None:
        if not rows:
            return
        adapt, values_of = self.dialect.adapt, table.values_of
        sql = f"INSERT INTO {physical} ({', '.join(table.columns)}) VALUES ({', '.join('?' * len(table.columns))})"
        curs.executemany(sql, ([adapt(value) for value in values_of(row)] for row in rows))

    def _rename_indexes(self, curs: Any, table: Table, old_prefix: str) -> None:
        curs.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table.name,))
        stale = [row["name"] for row in curs.fetchall() if row["name"].startswith(old_prefix)]
        for index in stale:
            curs.execute(f"DROP INDEX {index}")
        for statement in self.ddl(table, table.name)[1:]:
            curs.execute(statement)


ReadModelStore = PostgresReadModelRecorder | SQLiteReadModelRecorder


def open_store(database: Database, *, pool_size: int = 4, datastore: Any = None) -> ReadModelStore:
    """The read-model recorder for a database: over ``datastore`` (the process's one pool, the application's)
    when given, else over a pool of its own (creating the tracking table if needed)."""
    recorder_class = PostgresReadModelRecorder if database.is_postgres else SQLiteReadModelRecorder
    if datastore is not None:
        return recorder_class(datastore)
    env = database.eventsourcing_env(pool_size=pool_size)
    factory = InfrastructureFactory.construct(env=Environment("projections", env))
    recorder = factory.tracking_recorder(recorder_class)  # type: ignore[arg-type]
    recorder._factory = factory  # keep the datastore's owner alive with the recorder
    return recorder
