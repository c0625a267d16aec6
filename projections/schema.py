"""Creating the tables, in one place: ``ledger db init``, and what ``serve``, ``project`` and a writing CLI
command call before using the read side.

Each read model's definition (its version, tables and indexes) is recorded beside it; a read model
whose recorded definition differs from the code's is rebuilt (blue/green, see :func:`projections.runner.rebuild`)
before the process uses it, one process at a time (a database lock), instead of being left stale.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg

from ledger.application import ProfileLedger
from ledger.settings import Database
from ledger.signing import SigningKeys
from projections.errors import RebuildInProgressError
from projections.log import EventLog
from projections.projection import ReadModelProjection
from projections.registry import select
from projections.store import ReadModelStore, lock_id, open_store

logger = logging.getLogger(__name__)

DEFINITIONS_TABLE = "read_model_definitions"
DEFINITIONS_DDL = f"CREATE TABLE IF NOT EXISTS {DEFINITIONS_TABLE} (name TEXT PRIMARY KEY, definition TEXT NOT NULL)"
RETIRED_TABLES = ("profile_graves",)
"""Tables of earlier definitions that no read model declares any more: dropped once their read model is rebuilt."""
REBUILD_LOCK = lock_id("__rebuild__")
"""Held while read models are rebuilt (and while definitions are checked): one at a time per database."""
_REBUILDING_HERE = threading.Lock()  # an in-memory SQLite database: one at a time in this process


def definition(projection: ReadModelProjection) -> str:
    """``v<version>-<digest of the tables and indexes>``."""
    tables = [(table.name, table.ddl(postgres=True, trigram=True), table.ddl(postgres=False, trigram=False))
              for table in projection.tables]
    return f"v{projection.version}-{hashlib.sha256(json.dumps(tables).encode()).hexdigest()[:16]}"


def create_read_side(store: ReadModelStore, database: Database, events_table: str | None = None) -> list[str]:
    """Rebuild the read models whose definition changed (or, given the log's ``events_table``, that are past its
    end); then the tracking table and every read model's tables, when they do not exist yet (idempotent). Returns
    the names of those rebuilt."""
    # (definitions first: a process that recorded them had made the tracking table before, so one starting beside
    # it on a new database never takes the table it has not made yet for one lost)
    lost_tracking = _made_before(store) and bool(store.missing_tables([store.tracking_table]))
    store.create_table()
    store.create_parked_table()
    changed = rebuild_changed(store, database, lost_tracking, events_table)  # first: their tables may change shape
    with store.datastore.transaction(commit=True) as curs:
        for table in RETIRED_TABLES:
            curs.execute(f"DROP TABLE IF EXISTS {table}")
    store.create_read_model_tables(select())
    return changed


def rebuild_changed(store: ReadModelStore, database: Database, lost_tracking: bool = False,
                    events_table: str | None = None) -> list[str]:
    """Rebuild the read models made before (their definition is recorded) whose definition changed since, or
    that lost a table or their positions (``lost_tracking``): made again empty, they would answer that nothing
    is there, and their positions would say they are up to date (or, lost, that every event is still to apply
    onto rows that hold them already). So are those past the end of the log in ``events_table`` (its tail was
    cut): they would skip the events written at its positions again."""
    projections = select()
    current = {projection.name: definition(projection) for projection in projections}
    changed, recorded = _to_rebuild(store, projections, current, lost_tracking, events_table)
    if not changed:  # a process that has nothing to rebuild never waits for one running elsewhere
        store.create_read_model_tables(projections)  # before their definitions say they were made
        _record_definitions(store, current, recorded)
        return changed
    with _one_process_at_a_time(store, database):
        changed, recorded = _to_rebuild(store, projections, current, lost_tracking, events_table, say=True)
        if changed:  # still: another process did not rebuild them meanwhile
            from projections.runner import rebuild

            rebuild(database, changed, progress=False)
        _record_definitions(store, current, recorded)
    return changed


def _to_rebuild(store: ReadModelStore, projections: list[ReadModelProjection], current: dict[str, str],
                lost_tracking: bool, events_table: str | None, say: bool = False) -> tuple[list[str], dict[str, str]]:
    """The read models :func:`rebuild_changed` rebuilds, and the definitions recorded."""
    with store.datastore.transaction(commit=True) as curs:
        store.schema_lock(curs)  # processes starting together (CREATE TABLE IF NOT EXISTS races on PostgreSQL)
        curs.execute(DEFINITIONS_DDL)
        curs.execute(f"SELECT name, definition FROM {DEFINITIONS_TABLE}")
        recorded = {row["name"]: row["definition"] for row in curs.fetchall()}
    changed = [name for name, made in current.items() if name in recorded and recorded[name] != made]
    missing = store.missing_tables(table.name for projection in projections for table in projection.tables)
    lost = [projection.name for projection in projections if projection.name in recorded and projection.name
            not in changed and (lost_tracking or any(table.name in missing for table in projection.tables))]
    positions, head = store.positions_and_head(current, events_table) if events_table else ({}, 0)
    ahead = [name for name, position in positions.items() if position > (head or 0) and name not in changed + lost]
    for names, why in ((changed, "changed definition"), (lost, "lost a table or their positions"),
                       (ahead, "are past the log's end (its tail was cut)")):
        if names and say:
            logger.warning("read models %s %s: rebuilding them", ", ".join(names), why)
    return changed + lost + ahead, recorded


def differing_definitions(store: ReadModelStore, names: list[str]) -> set[str]:
    """Those of the named read models whose recorded definition is not this code's: made by other handlers or
    tables, they differ from what this code makes of the log until the next start rebuilds them."""
    if store.missing_tables([DEFINITIONS_TABLE]):
        return set()
    with store.datastore.transaction(commit=False) as curs:
        curs.execute(f"SELECT name, definition FROM {DEFINITIONS_TABLE}")
        recorded = {row["name"]: row["definition"] for row in curs.fetchall()}
    return {projection.name for projection in select(names)
            if projection.name in recorded and recorded[projection.name] != definition(projection)}


def _made_before(store: ReadModelStore) -> bool:
    """Whether read models were made on this database before (their definitions are recorded)."""
    if store.missing_tables([DEFINITIONS_TABLE]):
        return False
    with store.datastore.transaction(commit=False) as curs:
        curs.execute(f"SELECT 1 FROM {DEFINITIONS_TABLE} LIMIT 1")
        return curs.fetchone() is not None


def record_rebuilt(store: ReadModelStore, projections: list[ReadModelProjection]) -> None:
    """Record these read models, just rebuilt into tables of this code's making, as made by this code's definitions
    (else a verify after an upgrade's `ledger rebuild` still found them made by another version's)."""
    with store.datastore.transaction(commit=True) as curs:
        curs.execute(DEFINITIONS_DDL)
    _record_definitions(store, {projection.name: definition(projection) for projection in projections}, {})


def _record_definitions(store: ReadModelStore, current: dict[str, str], recorded: dict[str, str]) -> None:
    upsert = store.dialect.compile(
        f"INSERT INTO {DEFINITIONS_TABLE} (name, definition) VALUES (:name, :definition) "
        "ON CONFLICT (name) DO UPDATE SET definition = excluded.definition"
    )
    stale = {name: made for name, made in current.items() if recorded.get(name) != made}
    if stale:
        with store.datastore.transaction(commit=True) as curs:
            for name, made in stale.items():
                curs.execute(upsert, {"name": name, "definition": made})


@contextmanager
def _one_process_at_a_time(store: ReadModelStore, database: Database) -> Iterator[None]:
    """The rebuild lock, waited for: a session lock on PostgreSQL, the lock file's on SQLite."""
    if not store.dialect.is_postgres:
        release = _sqlite_rebuild_lock(database, wait=True)
        try:
            yield
        finally:
            release()
        return
    with store.datastore.get_connection() as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (REBUILD_LOCK,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (REBUILD_LOCK,))


def hold_rebuild_lock(database: Database) -> Callable[[], None]:
    """Take the rebuild lock without waiting (:class:`RebuildInProgressError` when it is held); returns the
    function that lets it go. It is let go too when the process dies: on PostgreSQL a session lock on a
    connection of its own; on SQLite (one machine) a lock on a file beside the database's."""
    if database.is_postgres:
        conn = psycopg.connect(database.url, autocommit=True, connect_timeout=5)
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (REBUILD_LOCK,)).fetchone()
        if row and row[0]:
            return conn.close
        conn.close()
    elif (release := _sqlite_rebuild_lock(database, wait=False)) is not None:
        return release
    raise RebuildInProgressError("a rebuild of the read models is already running; try again when it ends")


def _sqlite_rebuild_lock(database: Database, *, wait: bool) -> Callable[[], None] | None:
    """An exclusive ``flock`` on ``<database file>.rebuild-lock`` (every process on the file sees it; each open of
    it is its own holder, so threads of one process exclude each other too); None when it is held and not
    ``wait``. An in-memory database lives in one process: a lock of the process's."""
    path = database.sqlite_path
    if ":memory:" in path or "mode=memory" in path:
        return _REBUILDING_HERE.release if _REBUILDING_HERE.acquire(blocking=wait) else None
    path = os.path.realpath(path)  # one lock file whatever the spelling (a link, a relative path)
    descriptor = os.open(f"{path}.rebuild-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return lambda: os.close(descriptor)  # closing the file lets the lock go


def init_database(database: Database) -> None:
    """Every table the ledger needs: the event store's (the library creates them with the application), the
    tracking table and the read models'. A log signed with another key than this process's (or with no key here)
    is refused first: writes would sign with a key its readers do not have, and reads would set every event aside."""
    keys = SigningKeys.from_env(os.environ)
    if keys.named:  # unreadable, no write could ever commit: refused before any table is made
        keys.key_id  # noqa: B018 - loads the key: SigningKeyError if it cannot be read
    app = ProfileLedger(env=database.eventsourcing_env(pool_size=2))
    try:
        log = EventLog(database, app=app)
        log.require_its_key()
        create_read_side(open_store(database, datastore=app.recorder.datastore), database, log.events_table)
    finally:
        app.close()
