"""The PostgreSQL insert of events, bounded in time: no save can hold the events table's lock indefinitely.

The library inserts events in psycopg's *pipeline mode*. With a large payload (a few MB) that can deadlock:
the final ``Pipeline.sync()`` stops sending once no command is left to queue, although libpq's non-blocking
flush has not sent all of the INSERT yet, and then waits for results — which the server, still waiting for the
rest of the INSERT (``ClientRead``), never sends. Both sides wait for ever while the transaction holds the
``EXCLUSIVE`` lock on the events table, so every other writer waits too (psycopg issue #685 is the same race
on leaving a pipeline; the sync path still has it in psycopg 3.3). :func:`insert_events` runs the same
statements without a pipeline: a plain ``execute`` flushes until everything is sent before it reads.

Each insert transaction also has server-side limits (the datastore's ``lock_timeout`` and
``idle_in_transaction_session_timeout``, and :data:`WRITE_STATEMENT_TIMEOUT_SECONDS` as ``statement_timeout``):
a save that cannot take the lock or finish in time is rolled back and raises :class:`WriteTimeoutError`, which
the API answers with 503 (and group commit gives to every save of the batch and of the queue at once). A lost connection is retried once, as the library's
recorders do here (``ledger.recorders.fail_fast``); a timeout is not retried.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import psycopg
import psycopg.errors
from eventsourcing.persistence import InterfaceError, OperationalError, RecordConflictError, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder
from psycopg.sql import SQL, Identifier, Literal

from ledger.errors import ValidationError

EVENT_BYTES_MAX = 4 * 1024 * 1024
"""The largest event state the ledger records (the API's default body limit is half of it)."""
WRITE_STATEMENT_TIMEOUT_SECONDS = 10.0
"""How long any statement of an insert transaction may run before it is cancelled and the transaction rolled back."""
PROBE_LOCK_TIMEOUT_SECONDS = 2.0
"""``/ready``'s write probe: how long it may wait for the events table's lock."""


def check_event_sizes(stored_events: Sequence[StoredEvent]) -> None:
    """Refuse (422, nothing recorded) a save with an event larger than :data:`EVENT_BYTES_MAX`."""
    for stored in stored_events:
        if len(stored.state) > EVENT_BYTES_MAX:
            raise ValidationError(
                f"the change is too large to record: an event of {len(stored.state)} bytes "
                f"(at most {EVENT_BYTES_MAX} bytes)"
            )


StreamsRead = Sequence[tuple[UUID, int | None]]
"""What a save may carry as ``unchanged``: streams its command read but does not write, each with the version it
read (None: none recorded). The insert transaction refuses the save (:class:`RecordConflictError`, nothing recorded; the command is re-run
on fresh state) when one of them has moved on since: a decision taken on one stream stays valid against a concurrent
command on another (an execution recorded against its profile's delete). Inserts are serialised (PostgreSQL: the
events table's lock; SQLite: one writer), so the check is exact."""


def check_unchanged(cursor: Any, select_versions: str | Any, unchanged: StreamsRead | None,
                    ids: Callable[[list[UUID]], Any] = list) -> None:
    """Raise :class:`RecordConflictError` if a stream in ``unchanged`` is no longer at the version read, run in the
    insert transaction: one query, ``select_versions``, given the streams' ids (as ``ids`` passes them), answers
    each stream's ``id`` and ``version``."""
    if not unchanged:
        return
    cursor.execute(select_versions, (ids([stream_id for stream_id, _ in unchanged]),))
    now = {UUID(str(row["id"])): row["version"] for row in cursor.fetchall()}
    for stream_id, version in unchanged:
        if now.get(stream_id) != version:
            raise RecordConflictError(
                f"stream {stream_id} moved from version {version} to {now.get(stream_id)} since it was read"
            )


class WriteTimeoutError(OperationalError):
    """An insert of events did not get the lock or finish in time; it was rolled back (nothing was recorded)."""


def _timeout(name: str, seconds: float) -> Any:
    return SQL("SET LOCAL {} = {}").format(Identifier(name), Literal(f"{int(seconds * 1000)}ms"))


def insert_events(recorder: Any, stored_events: Sequence[StoredEvent], *, unchanged: StreamsRead = (),
                  **kwargs: Any) -> Sequence[int] | None:
    """What ``PostgresApplicationRecorder.insert_events`` does (lock the table, insert, notify, return the
    notification ids), in one transaction, without pipeline mode and within the write timeouts; refused if a stream
    of ``unchanged`` (:data:`StreamsRead`) moved on.

    ``recorder`` is the ledger's ``PostgresApplicationRecorder``, which keeps the library's lock, NOTIFY and
    insert statements: its ``_insert_events`` hook, its insert statement and its id fetch run unchanged; then its
    ``in_transaction`` hook, if it has one (see :data:`ledger.recorders.InTransaction`), and the insert of the
    signed head the transaction leaves, before the commit.
    """
    check_event_sizes(stored_events)
    try:
        return _insert_once(recorder, stored_events, unchanged, **kwargs)
    except WriteTimeoutError:
        raise
    except (InterfaceError, OperationalError):
        time.sleep(0.1)
    return _insert_once(recorder, stored_events, unchanged, **kwargs)


def _insert_once(recorder: Any, stored_events: Sequence[StoredEvent], unchanged: StreamsRead,
                 **kwargs: Any) -> Sequence[int] | None:
    try:
        with recorder.datastore.get_connection() as conn:  # an autocommit connection: the transaction is ours
            try:
                with conn.cursor() as curs:
                    # One round trip for BEGIN, the timeouts, the table lock and the log's end (the
                    # pipeline gave one for everything); then the INSERT, then the signed head, NOTIFY and COMMIT.
                    timeout = _timeout("statement_timeout", WRITE_STATEMENT_TIMEOUT_SECONDS)
                    curs.execute(SQL("; ").join([SQL("BEGIN"), timeout, *recorder.lock_table_statements,
                                                 recorder.end_statement]))
                    end = recorder.chain_end(curs)
                    recorder._insert_events(curs, stored_events, **kwargs)
                    ids = None
                    if stored_events:
                        PostgresAggregateRecorder._insert_stored_events(recorder, curs, stored_events, **kwargs)
                        ids = recorder._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
                    check_unchanged(curs, recorder.stream_versions_statement, unchanged)
                    in_transaction = getattr(recorder, "in_transaction", None)
                    after_commit = in_transaction(curs, stored_events, ids) if in_transaction and ids else None
                    signed_head = recorder.signed_head_statement(end, stored_events, ids) if ids else None
                    curs.execute(_notify_and_commit(recorder, ids, signed_head) if ids else SQL("COMMIT"))
                    if after_commit is not None:
                        after_commit()
                    return ids
            except BaseException:
                if not conn.closed:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
                raise
    except OperationalError as error:
        cause = error.__cause__
        if isinstance(cause, (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)):
            raise WriteTimeoutError(_timeout_message(recorder, cause)) from error
        raise


def _notify_and_commit(recorder: Any, ids: Sequence[int], signed_head: Any) -> Any:
    """The signed head's INSERT (if any), then the NOTIFY the log's followers wake on, with the last position
    inserted (a follower already there need not look), sent last: after the inline projection's own notification,
    which says the read models are there. One round trip."""
    notify = SQL("NOTIFY {}, {}; COMMIT").format(Identifier(recorder.channel_name), Literal(str(ids[-1])))
    return notify if signed_head is None else SQL("; ").join([signed_head, notify])


def _timeout_message(recorder: Any, cause: BaseException) -> str:
    if isinstance(cause, psycopg.errors.LockNotAvailable):
        return (
            f"the event log stayed locked by another writer for {recorder.datastore.lock_timeout} s; nothing was "
            "recorded; retry shortly"
        )
    return f"the write did not finish within {WRITE_STATEMENT_TIMEOUT_SECONDS:g} s and was rolled back; retry shortly"


def probe_writes(recorder: Any) -> str | None:
    """Whether a write could commit now: None, or what stops it (PostgreSQL: the events table's lock cannot be
    taken within :data:`PROBE_LOCK_TIMEOUT_SECONDS`; SQLite: its file is the one opened; other stores: not
    probed)."""
    opened_file = getattr(recorder, "opened_file", None)
    if opened_file is not None:
        try:
            opened_file.check()
        except OperationalError as error:
            return str(error)
    if not hasattr(recorder, "events_table_name") or not hasattr(recorder.datastore, "schema"):
        return None
    lock = SQL("LOCK TABLE {}.{} IN EXCLUSIVE MODE").format(
        Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name)
    )
    try:
        with recorder.datastore.get_connection() as conn, conn.transaction(force_rollback=True):
            conn.execute(_timeout("lock_timeout", PROBE_LOCK_TIMEOUT_SECONDS))
            conn.execute(_timeout("statement_timeout", PROBE_LOCK_TIMEOUT_SECONDS))
            conn.execute(lock)
    except OperationalError as error:
        if isinstance(error.__cause__, (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)):
            return f"writes cannot commit: the event log has been locked for over {PROBE_LOCK_TIMEOUT_SECONDS:g} s"
        return f"writes cannot commit: {type(error).__name__}"
    return None
