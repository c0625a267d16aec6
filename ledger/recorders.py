"""Event recorders that make the log append-only and tamper-evident.

They extend the eventsourcing library's application recorders (selected with its
``APPLICATION_RECORDER_TOPIC`` setting, see ``Database.eventsourcing_env``):

* PostgreSQL: an ``AFTER INSERT`` trigger writes the chain row of each event in the inserting transaction
  (inserts are already serialised by the library's EXCLUSIVE table lock, so the chain adds no new
  serialisation), and ``BEFORE UPDATE/DELETE/TRUNCATE`` triggers refuse any change to the event and chain
  tables.
* PostgreSQL saves are group-committed (:mod:`ledger.group_commit`): the concurrent saves of many threads share
  one insert transaction, so they share its table lock, NOTIFY and commit. ``LEDGER_GROUP_COMMIT=off`` gives
  each save a transaction of its own again (read once, at import: for comparing the two in a benchmark).
* SQLite: the chain rows are written by the recorder in the inserting transaction (SQLite has one writer at
  a time anyway); triggers refuse UPDATE and DELETE.
* Both: each insert transaction signs the head it leaves (its last position and the link there) and stores the
  signature in the ``…_heads`` table, append-only too (``sign_head``, set by the application to its key's
  :meth:`ledger.signing.SigningKeys.sign_head`): a rewrite of the log before that head cannot be re-signed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
)
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier, Literal
from psycopg_pool import PoolTimeout

from ledger.chain import (
    GENESIS,
    ChainEnd,
    ChainHead,
    ChainRow,
    SignedHead,
    StoredRow,
    VerifyReport,
    Walk,
    event_digest,
    next_link,
    stored_bytes,
    verify,
)
from ledger import write_path
from ledger.errors import TamperedRecordError
from ledger.group_commit import GroupCommitter
from ledger.outages import OpenedFile, pool_exhausted, recover_quickly_from_outages
from ledger.settings import parse_switch

BATCH = 5000

InTransaction = Callable[[Any, Sequence[StoredEvent], Sequence[int]], Callable[[], None] | None]
"""What a recorder's ``in_transaction`` hook is: called with the cursor, the events and their positions in each
insert transaction, after the insert and before the commit (the read side's inline projection,
``projections.inline``, set by a process's composition root); it returns what to call after the commit, if
anything. An error it raises rolls the insert back."""
SignHead = Callable[[int, bytes], bytes]
"""Signs the head an insert transaction leaves: its last position and the chain's link there."""
EndProblem = Callable[[ChainEnd, Callable[[], bytes]], str | None]
"""Why an insert may not sign a head past the log's end as it found it, given a way to read the last record
(:meth:`ledger.signing.SigningKeys.end_problem`); None: it may."""
GROUP_COMMIT = parse_switch(os.environ.get("LEDGER_GROUP_COMMIT"), default=True)

SnapshotWalk = tuple[Any, Callable[[VerifyReport, Iterator[StoredRow]], VerifyReport]]
"""The snapshot store's recorder, and what checks its records after a walk that passed (``ledger.verification``):
given the walk's report and every snapshot (by stream and version, position 0), the report to answer."""

UNREACHABLE_HOLD_S = 1.0
"""How long after a call found no connection to the database (the pool's timeout ran out) calls fail at once, while
the pool has none either."""


def fail_fast(method: Callable[..., Any]) -> Callable[..., Any]:
    """A recorder's database call that gives up soon while the database is away.

    The library retries a failed call 10 times, each waiting up to the pool's connect timeout: a request would hang
    for close to a minute. One retry (for a connection that broke since it was last checked; none after the pool
    found no connection within its timeout) and then the error: the API answers 503 and the client retries. A call
    made within :data:`UNREACHABLE_HOLD_S` of one that found no connection at all, while the pool still has none,
    fails at once: requests queued behind one another (the library reads a cached aggregate's new events under a lock
    of its own) would each wait out the pool again, the sixth for half a minute."""

    @functools.wraps(method)
    def call(recorder: Any, *args: Any, **kwargs: Any) -> Any:
        datastore = recorder.datastore
        if time.monotonic() < getattr(datastore, "unreachable_until", 0.0) and not datastore.pool.get_stats().get(
            "pool_available"
        ):
            raise OperationalError("the database could not be reached a moment ago; not trying again yet")
        for attempt in range(2):
            try:
                return method(recorder, *args, **kwargs)
            except (InterfaceError, OperationalError) as error:
                if isinstance(error.__cause__, PoolTimeout):  # no connection at all: another wait would find none
                    if not pool_exhausted(datastore):  # (else each is in use: the server is busy, not its database)
                        datastore.unreachable_until = time.monotonic() + UNREACHABLE_HOLD_S
                    raise
                if attempt:
                    raise
            time.sleep(0.1)
        raise AssertionError("not reached: the second attempt answers or raises")

    return call


def refusing_unreadable_rows(select_events: Callable[..., Any]) -> Callable[..., Any]:
    """The library's PostgreSQL ``select_events``, with a row it cannot read (a NULL where it expects bytes, put
    there by the database's owner) refused as tampering (:class:`TamperedRecordError`) rather than failing as a
    fault of the ledger's own."""

    @functools.wraps(select_events)
    def call(recorder: Any, originator_id: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return select_events(recorder, originator_id, *args, **kwargs)
        except TypeError as error:
            raise TamperedRecordError(f"a stored record of {originator_id} holds a NULL or a value of another type: "
                                      f"it was changed outside the ledger ({error})",
                                      originator_id=str(originator_id)) from None

    return call


UNDECODABLE = "Could not decode to UTF-8"
"""SQLite's message for a text value that is not UTF-8: raw bytes the database's owner wrote into a text column."""


def refusing_undecodable_text(select: Callable[..., Any]) -> Callable[..., Any]:
    """An SQLite read that met text that is not UTF-8 refused as tampering (:class:`TamperedRecordError`), not
    reported as a database that cannot be reached (which a retry would wait out)."""

    @functools.wraps(select)
    def call(recorder: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return select(recorder, *args, **kwargs)
        except OperationalError as error:
            if UNDECODABLE not in str(error):
                raise
            raise TamperedRecordError(f"a stored record holds text that is not UTF-8: it was changed outside the "
                                      f"ledger ({error})") from None

    return call


@contextlib.contextmanager
def text_as_found(curs: Any) -> Iterator[None]:
    """On SQLite, text that is not UTF-8 read with U+FFFD in place of what is not, so that a walk or a comparison
    reports its row altered; nothing changes elsewhere."""
    connection = getattr(getattr(curs, "sqlite_cursor", None), "connection", None)
    if connection is None:
        yield
        return
    previous, connection.text_factory = connection.text_factory, lambda data: data.decode("utf-8", "replace")
    try:
        yield
    finally:
        connection.text_factory = previous


EARLIEST = -(2**63)
"""Where a full walk starts reading: every row, those the database's owner may have put at position 0 or below
too (the library's stream reads would see them)."""


def _walked_after(walk: Walk) -> int:
    """The position a walk reads the rows after: its verified start, or (a full walk) none."""
    return walk.start.position if walk.start is not None and walk.start.position > 0 else EARLIEST


class SignedHeads:
    """What both chained recorders share about signed heads: each insert transaction checks that a genuine signed
    head covers the end it extends (``end_problem``, set with ``sign_head`` by the application), then signs the
    head it leaves. An end this process signed itself is known to be covered: no signature is made to check it."""

    sign_head: SignHead | None = None
    end_problem: EndProblem | None = None
    sealed: ChainEnd | None = None

    def check_end(self, end: ChainEnd, last_record: Callable[[], bytes]) -> None:
        """Refuse (:class:`TamperedRecordError`, nothing recorded) to extend an end no genuine signed head covers."""
        if self.end_problem is None or end == self.sealed:
            return
        problem = self.end_problem(end, last_record)
        if problem is not None:
            raise TamperedRecordError(problem)

    def seal(self, end: ChainEnd, stored_events: Sequence[StoredEvent],
             positions: Sequence[int]) -> tuple[int, bytes] | None:
        """The head the insert of ``stored_events`` at ``positions`` after ``end`` leaves, and its signature (None:
        no key to sign with); remembered as sealed."""
        if self.sign_head is None or not positions:
            return None
        position, _, link = chain_rows(end.link, stored_events, positions)[-1]
        signature = self.sign_head(position, link)
        self.sealed = ChainEnd(position, link, SignedHead(position, signature))
        return position, signature


def chain_end(row: Any) -> ChainEnd:
    """The :class:`ChainEnd` a row of a recorder's ``end_statement`` gives."""
    head = None if row["head_position"] is None else SignedHead(row["head_position"], bytes(row["head_signature"]))
    return ChainEnd(row["position"] or 0, GENESIS if row["link"] is None else bytes(row["link"]), head)


def end_statement(chain: str, heads: str) -> str:
    """The query of the log's end (:func:`chain_end`) from the chain and heads tables (names as the SQL spells them)."""
    last = "(SELECT {column} FROM {table} ORDER BY notification_id DESC LIMIT 1) AS {name}"
    return "SELECT " + ", ".join(last.format(column=column, table=table, name=name) for column, table, name in (
        ("notification_id", chain, "position"), ("link", chain, "link"),
        ("notification_id", heads, "head_position"), ("signature", heads, "head_signature")))


class CreatedBesideOthers:
    """Several processes may start at once on a new database: the library creates a table's composite types each
    in a transaction of its own, and the table itself, outside any lock, and two ``CREATE … IF NOT EXISTS`` at once
    collide on the catalog (a unique violation, or "already exists"). The loser tries again: the type or table is
    there then, which the library allows for; a fault of another kind fails every try."""

    @retry((IntegrityError, ProgrammingError), max_attempts=3)
    def create_table(self) -> None:
        super().create_table()  # type: ignore[misc]


class ChainedPostgresApplicationRecorder(SignedHeads, CreatedBesideOthers, PostgresApplicationRecorder):
    _insert_now = write_path.insert_events  # the library's insert without pipeline mode, bounded in time
    in_transaction: InTransaction | None = None
    select_events = refusing_unreadable_rows(
        fail_fast(PostgresAggregateRecorder.select_events.__wrapped__))  # type: ignore[attr-defined]
    select_notifications = fail_fast(PostgresApplicationRecorder.select_notifications.__wrapped__)  # type: ignore[attr-defined]
    max_notification_id = fail_fast(PostgresApplicationRecorder.max_notification_id.__wrapped__)  # type: ignore[attr-defined]

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.chain_table_name = f"{events_table_name}_chain"
        self.heads_table_name = f"{events_table_name}_heads"
        log_tables = (events_table_name, self.chain_table_name, self.heads_table_name)
        link_fn, refuse_fn = f"{events_table_name}_chain_link", f"{events_table_name}_refuse_change"
        self.own_triggers = {(link_fn, events_table_name, link_fn), *(
            (f"{table}_{kind}", table, refuse_fn) for table in log_tables for kind in ("append_only", "no_truncate"))}
        """(name, table, function) of each trigger made here: the chain's, and the refusals of any change."""
        names = {
            "schema": Identifier(datastore.schema),
            "events": Identifier(events_table_name),
            "events_literal": Literal(events_table_name),
            "chain": Identifier(self.chain_table_name),
            "chain_digest_index": Identifier(f"{self.chain_table_name}_digest_idx"),
            "heads": Identifier(self.heads_table_name),
            "link_fn": Identifier(link_fn),
            "refuse_fn": Identifier(refuse_fn),
        }
        statements = [
            # Several processes may start at once: create the functions and triggers one at a time.
            "SELECT pg_advisory_xact_lock(hashtext({events_literal}))",
            "CREATE TABLE IF NOT EXISTS {schema}.{chain} ("
            " notification_id bigint PRIMARY KEY, digest bytea NOT NULL, link bytea NOT NULL)",
            "CREATE INDEX IF NOT EXISTS {chain_digest_index} ON {schema}.{chain} (digest)",
            "CREATE TABLE IF NOT EXISTS {schema}.{heads} ("
            " notification_id bigint PRIMARY KEY, signature bytea NOT NULL)",
            "CREATE OR REPLACE FUNCTION {schema}.{link_fn}() RETURNS trigger LANGUAGE plpgsql AS $$"
            " DECLARE previous bytea; digest bytea; topic_bytes bytea;"
            " BEGIN"
            "  SELECT c.link INTO previous FROM {schema}.{chain} c ORDER BY c.notification_id DESC LIMIT 1;"
            "  topic_bytes := convert_to(NEW.topic, 'UTF8');"
            "  digest := sha256(uuid_send(NEW.originator_id) || int8send(NEW.originator_version)"
            "    || int4send(octet_length(topic_bytes)) || topic_bytes"
            "    || int4send(octet_length(NEW.state)) || NEW.state);"
            "  INSERT INTO {schema}.{chain} VALUES (NEW.notification_id, digest,"
            "    sha256(coalesce(previous, decode(repeat('00', 32), 'hex'))"
            "           || int8send(NEW.notification_id) || digest));"
            "  RETURN NULL;"
            " END $$",
            "CREATE OR REPLACE TRIGGER {link_fn} AFTER INSERT ON {schema}.{events}"
            " FOR EACH ROW EXECUTE FUNCTION {schema}.{link_fn}()",
            "CREATE OR REPLACE FUNCTION {schema}.{refuse_fn}() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION 'the event log is append-only: % on % refused', TG_OP, TG_TABLE_NAME"
            "   USING ERRCODE = 'insufficient_privilege'; END $$",
        ]
        refusals = (  # of each table: a row's UPDATE or DELETE, and TRUNCATE
            "CREATE OR REPLACE TRIGGER {append_only} BEFORE UPDATE OR DELETE ON {schema}.{table}"
            " FOR EACH ROW EXECUTE FUNCTION {schema}.{refuse_fn}()",
            "CREATE OR REPLACE TRIGGER {no_truncate} BEFORE TRUNCATE ON {schema}.{table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{refuse_fn}()",
        )
        create = [SQL(statement).format(**names) for statement in statements]
        create += [
            SQL(statement).format(**names, table=Identifier(table), append_only=Identifier(f"{table}_append_only"),
                                  no_truncate=Identifier(f"{table}_no_truncate"))
            for table in log_tables for statement in refusals
        ]
        self.sql_create_statements.insert(0, create[0])
        self.sql_create_statements.extend(create[1:])
        self.group_commit = GroupCommitter(self._insert_now)
        self.stream_versions_statement = SQL(
            "SELECT originator_id AS id, max(originator_version) AS version FROM {}.{} WHERE originator_id = ANY(%s)"
            " GROUP BY originator_id"
        ).format(names["schema"], names["events"])
        qualified = {table: SQL("{}.{}").format(names["schema"], names[table]).as_string()
                     for table in ("chain", "heads")}
        self.end_statement = SQL(end_statement(qualified["chain"], qualified["heads"]))  # type: ignore[arg-type]
        self.last_record_statement = SQL("SELECT state FROM {}.{} WHERE notification_id = %s").format(
            names["schema"], names["events"])
        self._heads = (names["schema"], names["heads"])

    def chain_end(self, curs: Any) -> ChainEnd:
        """The log's end, read by :attr:`end_statement` under the table lock, at the end of the statements ``curs``
        just ran together; checked (:meth:`check_end`) before anything is inserted after it."""
        row = None
        while curs.nextset():
            row = curs.fetchone() if curs.description else row
        end = chain_end(row)
        self.check_end(end, lambda: stored_bytes(
            curs.execute(self.last_record_statement, (end.position,)).fetchone()["state"]))
        return end

    def signed_head_statement(self, end: ChainEnd, stored_events: Sequence[StoredEvent],
                              positions: Sequence[int]) -> Any:
        """The INSERT of the signature of the head this transaction leaves, to run before its commit (None: no
        key to sign with). Its link is computed here as the trigger computes it: no round trip to read it."""
        sealed = self.seal(end, stored_events, positions)
        return None if sealed is None else SQL("INSERT INTO {}.{} VALUES ({}, {})").format(
            *self._heads, *map(Literal, sealed))

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Insert in a transaction shared with concurrent callers (group commit); answered after the commit.

        Saves that carry anything else (a tracking record) or nothing at all keep a transaction of their own.
        """
        unchanged = kwargs.pop("unchanged", None) or ()
        if not GROUP_COMMIT or not stored_events or any(value is not None for value in kwargs.values()):
            return self._insert_now(stored_events, unchanged=unchanged, **kwargs)
        return self.group_commit.save(stored_events, unchanged)

    def verify_chain(self, walk: Walk, snapshots: SnapshotWalk | None) -> VerifyReport:
        """Walk the log (after ``walk.start`` when given, whose stored link must be unchanged) and its chain, then
        the ``snapshots``, all as of one moment (a repeatable-read transaction): what commits meanwhile is the next
        walk's, never a row missing from one table and present in the other."""
        after = _walked_after(walk)
        schema, chain_table = Identifier(self.datastore.schema), Identifier(self.chain_table_name)
        events_sql = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{} "
            "WHERE notification_id > %s ORDER BY notification_id"
        ).format(schema, Identifier(self.events_table_name))
        chain_sql = SQL(
            "SELECT notification_id, digest, link FROM {}.{} WHERE notification_id > %s ORDER BY notification_id"
        ).format(schema, chain_table)
        heads_sql = SQL("SELECT notification_id, signature FROM {}.{} WHERE notification_id > %s "
                        "ORDER BY notification_id").format(*self._heads)
        link_sql = SQL("SELECT link, (SELECT max(notification_id) FROM {}.{} WHERE notification_id <= %s) AS last "
                       "FROM {}.{} WHERE notification_id = %s").format(schema, Identifier(self.events_table_name),
                                                                        schema, chain_table)
        find_sql = SQL("SELECT notification_id FROM {}.{} WHERE digest = %s LIMIT 1").format(schema, chain_table)
        with self.datastore.get_connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            # The library's pool ends transactions idle for a few seconds; this one idles while a batch is checked
            # and each snapshot's stream replayed (read-only: it holds up no writer).
            conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
            if walk.start is not None and after > 0:
                row = conn.execute(link_sql, (after, after)).fetchone()
                problem = _start_problem(walk.start, None if row is None else bytes(row["link"]),
                                         None if row is None else row["last"])
                if problem is not None:
                    return problem
            events_cursor = conn.cursor(name="ledger_verify_events")
            chain_cursor = conn.cursor(name="ledger_verify_chain")
            heads_cursor = conn.cursor(name="ledger_verify_heads")
            events_cursor.itersize = chain_cursor.itersize = heads_cursor.itersize = BATCH
            events = (
                StoredRow.read(r["notification_id"], r["originator_id"], r["originator_version"], r["topic"],
                               r["state"])
                for r in events_cursor.execute(events_sql, (after,))
            )
            chain = (
                ChainRow(r["notification_id"], bytes(r["digest"]), bytes(r["link"]))
                for r in chain_cursor.execute(chain_sql, (after,))
            )

            def find_digest(digest: bytes) -> int | None:
                row = conn.execute(find_sql, (digest,)).fetchone()
                return None if row is None else row["notification_id"]

            heads_kept = conn.execute("SELECT to_regclass(%s) AS found", (
                f"{self.datastore.schema}.{self.heads_table_name}",)).fetchone()["found"] is not None
            signed_heads = (SignedHead(r["notification_id"], bytes(r["signature"]))  # a dropped table: none signed
                            for r in (heads_cursor.execute(heads_sql, (after,)) if heads_kept else ()))
            report = verify(events, chain, find_digest, walk, signed_heads)
            if not report.ok or snapshots is None:
                return report
            recorder, check = snapshots
            snapshot_sql = SQL("SELECT originator_id, originator_version, topic, state FROM {}.{} "
                               "ORDER BY originator_id, originator_version").format(
                Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
            snapshot_cursor = conn.cursor(name="ledger_verify_snapshots")
            snapshot_cursor.itersize = BATCH
            return check(report, (
                StoredRow.read(0, r["originator_id"], r["originator_version"], r["topic"], r["state"])
                for r in snapshot_cursor.execute(snapshot_sql)
            ))


def _start_problem(start: ChainHead, stored_link: bytes | None, last_event: int | None) -> VerifyReport | None:
    """An incremental walk starts from a head verified before: its chain row must still hold the same link, and its
    event must still be there (``last_event``: the last position up to it that holds one)."""
    head = dict(checked=0, head_position=start.position, head_link=start.link.hex(), since=start.position)
    if stored_link == start.link and last_event != start.position:  # a tail cut from the events alone
        cut = (last_event or 0) + 1
        return VerifyReport(ok=False, problem="removed", position=cut,
                            detail=f"the events from position {cut} to the verified head at position "
                                   f"{start.position} are missing from the log (their chain rows are left)", **head)
    if stored_link == start.link:
        return None
    if stored_link is None:
        return VerifyReport(ok=False, problem="removed", position=start.position,
                            detail=f"the verified head at position {start.position} is missing from the log", **head)
    return VerifyReport(ok=False, problem="diverged", position=start.position,
                        detail=f"the chain at position {start.position} no longer holds the link verified before: "
                               "the log up to there was rewritten", **head)


class FailFastPostgresAggregateRecorder(CreatedBesideOthers, PostgresAggregateRecorder):
    """The snapshot store's recorder: one retry, like the application recorder (the library's waits out ten, and
    a command reading a snapshot would hang for half a minute while the database is down)."""

    insert_events = fail_fast(PostgresAggregateRecorder.insert_events.__wrapped__)  # type: ignore[attr-defined]
    select_events = refusing_unreadable_rows(
        fail_fast(PostgresAggregateRecorder.select_events.__wrapped__))  # type: ignore[attr-defined]


class LedgerPostgresFactory(PostgresFactory):
    """The library's PostgreSQL factory with this module's recorders (``PERSISTENCE_MODULE`` names it), whose pool
    tries a lost database again at least every few seconds and drops its broken connections together
    (:func:`ledger.outages.recover_quickly_from_outages`), and connects with every parameter of the database's URL
    (``sslmode`` and the rest, which the library leaves out)."""

    aggregate_recorder_class = FailFastPostgresAggregateRecorder
    application_recorder_class = ChainedPostgresApplicationRecorder

    def __init__(self, env: Any) -> None:
        recover_quickly_from_outages()
        super().__init__(env)
        self.datastore.pool.kwargs.update(json.loads(env.get("LEDGER_POSTGRES_CONNINFO") or "{}"))


class ChainedSQLiteApplicationRecorder(SignedHeads, SQLiteApplicationRecorder):
    in_transaction: InTransaction | None = None
    select_events = refusing_undecodable_text(SQLiteApplicationRecorder.select_events)
    select_notifications = refusing_undecodable_text(SQLiteApplicationRecorder.select_notifications)

    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events") -> None:
        self.chain_table_name = f"{events_table_name}_chain"
        self.heads_table_name = f"{events_table_name}_heads"
        self.own_triggers = {(f"{table}_no_{change}", table, "") for change in ("update", "delete")
                             for table in (events_table_name, self.chain_table_name, self.heads_table_name)}
        """(name, table, "") of each trigger made here: the refusals of any change."""
        self._committing = threading.local()  # the inline projection's after-commit call, per inserting thread
        self.stream_versions_statement = (
            f"SELECT originator_id AS id, max(originator_version) AS version FROM {events_table_name}"
            " WHERE originator_id IN (SELECT value FROM json_each(?)) GROUP BY originator_id"
        )
        self.end_statement = end_statement(self.chain_table_name, self.heads_table_name)
        self.opened_file = None if datastore.pool.is_sqlite_memory_mode else OpenedFile(datastore.pool.db_name)
        super().__init__(datastore, events_table_name)

    def create_table(self) -> None:
        super().create_table()
        if self.opened_file is not None:
            self.opened_file = OpenedFile(self.opened_file.path)  # the file made now, if it was not there

    def construct_create_table_statements(self) -> list[str]:
        chain, heads = self.chain_table_name, self.heads_table_name
        refuse = "BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END"
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {chain} (notification_id INTEGER PRIMARY KEY, digest BLOB NOT NULL,"
            " link BLOB NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {chain}_digest_idx ON {chain} (digest)",
            f"CREATE TABLE IF NOT EXISTS {heads} (notification_id INTEGER PRIMARY KEY, signature BLOB NOT NULL)",
            *(f"CREATE TRIGGER IF NOT EXISTS {name} BEFORE {name.rsplit('_', 1)[1].upper()} ON {table} {refuse}"
              for name, table, _ in sorted(self.own_triggers)),
        ]

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], *,
                       unchanged: write_path.StreamsRead | None = None, **kwargs: Any) -> Sequence[int] | None:
        write_path.check_event_sizes(stored_events)
        if self.opened_file is not None:
            self.opened_file.check()
        positions = super()._insert_events(c, stored_events, **kwargs)
        assert positions is not None
        write_path.check_unchanged(c, self.stream_versions_statement, unchanged,
                                   ids=lambda stream_ids: json.dumps([stream_id.hex for stream_id in stream_ids]))
        c.execute(self.end_statement)
        end = chain_end(c.fetchone())

        def last_record() -> bytes:
            c.execute(f"SELECT state FROM {self.events_table_name} WHERE rowid = ?", (end.position,))
            return stored_bytes(c.fetchone()["state"])

        self.check_end(end, last_record)
        c.executemany(f"INSERT INTO {self.chain_table_name} VALUES (?, ?, ?)",
                      chain_rows(end.link, stored_events, positions))
        sealed = self.seal(end, stored_events, positions)
        if sealed is not None:
            c.execute(f"INSERT INTO {self.heads_table_name} VALUES (?, ?)", sealed)
        if self.in_transaction is not None and positions:
            self._committing.after = self.in_transaction(c, stored_events, positions)
        return positions

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        self._committing.after = None
        positions = super().insert_events(stored_events, **kwargs)
        after_commit, self._committing.after = self._committing.after, None
        if after_commit is not None:
            after_commit()
        return positions

    def verify_chain(self, walk: Walk, snapshots: SnapshotWalk | None) -> VerifyReport:
        after = _walked_after(walk)
        with self.datastore.transaction(commit=False) as c, text_as_found(c):  # one transaction: one moment
            if walk.start is not None and after > 0:
                c.execute(f"SELECT link, (SELECT max(rowid) FROM {self.events_table_name} WHERE rowid <= ?) "
                          f"FROM {self.chain_table_name} WHERE notification_id = ?", (after, after))
                row = c.fetchone()
                problem = _start_problem(walk.start, None if row is None else bytes(row[0]),
                                         None if row is None else row[1])
                if problem is not None:
                    return problem
            c.execute(
                f"SELECT rowid, originator_id, originator_version, topic, state FROM {self.events_table_name}"
                " WHERE rowid > ? ORDER BY rowid", (after,)
            )
            events = [StoredRow.read(r[0], stream, r[2], r[3], r[4], id_as_written=as_written)
                      for r in c.fetchall() for stream, as_written in (_stream_id(r[1]),)]
            c.execute(f"SELECT notification_id, digest, link FROM {self.chain_table_name}"
                      " WHERE notification_id > ? ORDER BY notification_id", (after,))
            chain = [ChainRow(r[0], bytes(r[1]), bytes(r[2])) for r in c.fetchall()]

            def find_digest(digest: bytes) -> int | None:
                c.execute(f"SELECT notification_id FROM {self.chain_table_name} WHERE digest = ? LIMIT 1", (digest,))
                row = c.fetchone()
                return None if row is None else row[0]

            c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self.heads_table_name,))
            signed_heads = []  # a dropped table: none signed
            if c.fetchone() is not None:
                c.execute(f"SELECT notification_id, signature FROM {self.heads_table_name} WHERE notification_id > ?"
                          " ORDER BY notification_id", (after,))
                signed_heads = [SignedHead(r[0], bytes(r[1])) for r in c.fetchall()]
            report = verify(events, chain, find_digest, walk, signed_heads)
            if not report.ok or snapshots is None:
                return report
            recorder, check = snapshots
            c.execute(f"SELECT originator_id, originator_version, topic, state FROM {recorder.events_table_name}"
                      " ORDER BY originator_id, originator_version")
            return check(report, (StoredRow.read(0, _stream_id(r[0])[0], r[1], r[2], r[3]) for r in c.fetchall()))


def chain_rows(previous_link: bytes, stored_events: Sequence[StoredEvent],
               positions: Sequence[int]) -> list[tuple[int, bytes, bytes]]:
    """The chain rows ``(position, digest, link)`` of events inserted at ``positions`` after ``previous_link``."""
    rows = []
    link = previous_link
    for position, stored in zip(positions, stored_events):
        digest = event_digest(stored.originator_id, stored.originator_version, stored.topic, stored.state)
        link = next_link(link, position, digest)
        rows.append((position, digest, link))
    return rows


def _stream_id(text: str) -> tuple[UUID, bool]:
    """A stream id as SQLite holds it (text), and whether it is spelled as the library writes it (the only
    spelling its reads match)."""
    try:
        stream = UUID(text)
    except (TypeError, ValueError):
        return UUID(int=0), False
    return stream, text == stream.hex
