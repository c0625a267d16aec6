"""Keeping the read models up to date: workers that follow the event log, and rebuilds from position 0.

* :class:`ProjectionWorker` applies new events in batches. On PostgreSQL it is woken by ``LISTEN`` on the
  events table's channel (the library sends ``NOTIFY`` on every insert), with a polling fallback of a few
  seconds (a lost notification must not stall it) and reconnection when the database goes away. On SQLite it
  polls at a short interval. Anything in-process can call :meth:`ProjectionWorker.wake` (for instance
  ``ProfileLedger.add_listener(worker.wake)``) to make it look at once.
* Several workers, in several processes, can follow the same database: each batch of each projection is
  applied under that projection's lock, at most once (see :mod:`projections.store`).
* :func:`rebuild` builds fresh tables from position 0 while the old ones keep answering queries, then swaps
  them in with one transaction; the live workers continue from the rebuilt position.
* :func:`compare_with_log` builds them the same way but, instead of swapping them in, compares them with the live
  ones (``ledger verify``: read-model rows edited with SQL).
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ledger.outages import is_database_unavailable
from ledger.settings import Database
from ledger.signing.store import refuse_a_gap
from projections.follow import RETRY_SECONDS_MAX, Follower
from projections.memory import MemoryBuild
from projections.log import Batch, EventLog
from projections.parking import PARKED_TABLE, describe, is_transient
from projections.progress import announce
from projections.registry import select
from projections.store import REBUILD_SUFFIX, ReadModelComparison, ReadModelStore, open_store
from projections.wakeup import Notifications

__all__ = ["ProjectionWorker", "compare_with_log", "rebuild", "run_projections"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

BATCH_SIZE = 1000
REBUILD_BATCH_SIZE = 10_000
REBUILD_COPY_ROWS = 50_000  # rows that left a rebuild's memory, copied out together (see projections.memory)
REBUILD_CATCH_UP_S = 30.0  # the longest a rebuild keeps catching up with writers before leaving it to the workers
SETTLED_S = 0.05  # a read model at the log's head twice this far apart: inline writing has taken over


def _database(database: Database | str) -> Database:
    return database if isinstance(database, Database) else Database(database)


class ProjectionWorker(Follower):
    """Applies the event log to the named read models (all by default)."""

    # The fallback when a notification is lost (eventsourcing issue #305).
    poll_seconds_by_dialect = {"postgres": 3.0, "sqlite": 0.1}

    def __init__(
        self,
        database: Database | str,
        names: Iterable[str] | None = None,
        *,
        batch_size: int = BATCH_SIZE,
        poll_seconds: float | None = None,
        on_applied: Callable[[int], None] | None = None,
        reached: Callable[[], int] | None = None,
        store: ReadModelStore | None = None,
        log: EventLog | None = None,
        notifications: Notifications | None = None,
    ) -> None:
        database = _database(database)
        self.projections = select(names)
        self.batch_size = batch_size
        self._owned = (store is None, log is None)  # given by the composition root: closed there
        self.store = store or open_store(database)
        if store is None:
            self.store.create_read_model_tables(self.projections)
        super().__init__(database, log or EventLog(database), poll_seconds=poll_seconds, notifications=notifications)
        self.on_applied = on_applied
        """Called with the position every read model of this worker reached, after each batch it committed for
        all of them (waiters in this process are answered without a query)."""
        self.reached = reached
        """The position every read model is known, in this process, to have reached (written inline, say): a
        notification of an insert no further on is no reason to look."""

    def needs(self, position: int) -> bool:
        return self.reached is None or position > self.reached()

    def catch_up(self, stop: threading.Event | None = None) -> int:
        """Apply every event recorded so far; returns the position all these read models have reached.

        When another worker is applying a projection right now, this waits for it rather than duplicating it.
        """
        names = [projection.name for projection in self.projections]
        positions, target = self.store.positions_and_head(names, self.log.events_table)  # one query
        while True:
            reached = min(positions.values())
            if reached >= target or (stop is not None and stop.is_set()):
                return reached
            batch = self.log.read(reached, self.batch_size)
            if not batch.events:
                return reached
            behind = [projection for projection in self.projections if positions[projection.name] < batch.end]
            applied = self.store.apply_batches(behind, batch)  # one transaction, one commit for all of them
            if any(position is not None for position in applied.values()):
                announce(self.store, batch.end)  # waiters in every process look now (PostgreSQL NOTIFY)
                if self.on_applied is not None and None not in applied.values():
                    self.on_applied(batch.end)
            if None in applied.values():
                time.sleep(0.005)  # another worker holds it; its commit will move the position
            positions = self.store.positions(names)

    def close(self) -> None:
        owns_store, owns_log = self._owned
        if owns_log:
            self.log.close()
        if owns_store:
            self.store.datastore.close()


def run_projections(
    database: Database | str,
    stop: threading.Event,
    names: Iterable[str] | None = None,
    *,
    worker: ProjectionWorker | None = None,
) -> None:
    """Keep the read models up to date until ``stop`` is set (blocks; run it in a thread or a process), waiting for
    a database away as it starts as for one that goes away later."""
    worker = worker or when_reachable(lambda: ProjectionWorker(database, names), stop)
    if worker is None:
        return
    try:
        if when_reachable(lambda: worker.log.require_its_key() or True, stop):
            worker.run(stop)
    finally:
        worker.close()


def when_reachable(call: Callable[[], T], stop: threading.Event,
                   refused: Callable[[], str | None] = lambda: None) -> T | None:
    """``call()``, tried again while the database cannot be reached, until it answers (its result) or ``stop`` is set
    (None); raised at once when ``refused()`` says why waiting will not help (no such database or role...)."""
    pause = 0.5
    while True:
        try:
            return call()
        except Exception as error:
            if not is_database_unavailable(error) or refused() is not None:
                raise
            logger.warning("the database cannot be reached (%s); trying again in %.1fs", error, pause)
        if stop.wait(pause):
            return None
        pause = min(pause * 2, RETRY_SECONDS_MAX)


def rebuild(
    database: Database | str,
    names: Iterable[str] | None = None,
    progress: bool = True,
    *,
    batch_size: int = REBUILD_BATCH_SIZE,
    copy_rows: int = REBUILD_COPY_ROWS,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Rebuild read models from position 0 into new tables, then swap them in; returns the positions reached.
    ``on_progress(position, head)`` is called after each batch read (``progress``: a bar on the terminal).

    Queries keep being answered from the old tables until the swap, which is one short transaction per
    projection (it first applies whatever was recorded during the rebuild). A stream with an event removed from
    the log stops the rebuild (:class:`~ledger.errors.TamperedRecordError`) and leaves the old tables in place.
    """
    database = _database(database)
    projections = select(names)
    store = open_store(database)
    log = EventLog(database)
    # The memory build makes millions of objects and keeps hundreds of thousands alive (rows, events of a batch), none
    # of them in reference cycles: the cycle collector's passes over them cost 40% of a rebuild's CPU.
    collecting = gc.isenabled()
    gc.disable()
    try:
        _build_from_the_start(store, log, projections, progress=progress, batch_size=batch_size, copy_rows=copy_rows,
                              on_progress=on_progress)
        for projection in projections:
            store.swap_in_rebuilt(projection, log.read, batch_size)
        from projections.schema import record_rebuilt  # (it rebuilds with this module)

        record_rebuilt(store, projections)
        return _caught_up(ProjectionWorker(database, [p.name for p in projections], store=store, log=log))
    finally:
        if collecting:
            gc.enable()
        log.close()
        store.datastore.close()


def _caught_up(worker: ProjectionWorker) -> dict[str, int]:
    """The read models brought to the log's head after a rebuild swapped them in: writers that found one behind or
    busy meanwhile left their events to a worker, and there may be none (servers with ``--no-projections`` and a
    ``ledger project`` that is down), so that inline writing, which goes on only from the head, would never resume.
    Caught up until the head stays put (a writer that committed meanwhile is caught up too), for at most
    ``REBUILD_CATCH_UP_S``; the positions reached."""
    names = [projection.name for projection in worker.projections]
    deadline, settled = time.monotonic() + REBUILD_CATCH_UP_S, 0
    while True:
        worker.catch_up()
        positions, head = worker.store.positions_and_head(names, worker.log.events_table)
        settled = settled + 1 if min(positions.values()) >= head else 0
        if settled == 2 or time.monotonic() > deadline:
            return positions
        time.sleep(SETTLED_S if settled else 0)


REDEFINED = "its recorded definition is not this version's (the next start rebuilds it)"
HOOKED = "the database runs what the ledger did not make there"


def compare_with_log(
    database: Database | str,
    names: Iterable[str] | None = None,
    *,
    batch_size: int = REBUILD_BATCH_SIZE,
    copy_rows: int = REBUILD_COPY_ROWS,
) -> list[ReadModelComparison]:
    """Compare each read model with what the log makes of it: rows edited, deleted or added with SQL show.

    Each is built afresh into the rebuild tables, as :func:`rebuild` does (the same handlers, parking the same
    events), then brought up to the live read model's position and compared with it row by row, under its lock
    (:meth:`~projections.store.ReadModelRecorder.compare_rebuilt`); the rebuild tables are dropped, nothing live
    is changed. The build goes no further than the live read models' positions, so one behind the log is compared
    where it stands; one whose recorded definition is not this code's is not compared (and says why). The caller
    holds the rebuild lock (:func:`projections.schema.hold_rebuild_lock`): the rebuild tables are a rebuild's too.
    Needs the log's signing key, as a rebuild does."""
    from projections.schema import differing_definitions

    database = _database(database)
    projections = select(names)
    store = open_store(database)
    log = EventLog(database)
    collecting = gc.isenabled()
    gc.disable()  # as in rebuild()
    try:
        log.require_its_key()  # first: without it nothing is built, nor dropped
        recorder = log.recorder
        touched = {recorder.events_table_name, recorder.chain_table_name, recorder.heads_table_name,
                   store.tracking_table, PARKED_TABLE, *(table.name + suffix for projection in projections
                                                          for table in projection.tables
                                                          for suffix in ("", REBUILD_SUFFIX))}
        hooks = store.foreign_hooks(recorder.own_triggers, touched)
        if hooks:  # it could change what is compared as it changes the read models: no comparison is proof
            return [ReadModelComparison(projection.name, 0, 0, not_compared=f"{HOOKED} ({', '.join(hooks)}): it "
                                        "may change the rows compared as it changes the read models; drop it, "
                                        "`ledger rebuild`")
                    for projection in projections]
        redefined = differing_definitions(store, [projection.name for projection in projections])
        comparable = [projection for projection in projections if projection.name not in redefined]
        try:
            if comparable:  # no further than the live read models: one behind is compared where it stands
                live = store.positions(projection.name for projection in comparable)
                _build_from_the_start(store, log, comparable, progress=False, batch_size=batch_size,
                                      copy_rows=copy_rows, until=min(live.values()))
            compared = {projection.name: store.compare_rebuilt(projection, log.read, batch_size)
                        for projection in comparable}
        finally:
            for projection in comparable:
                store.drop_tables(projection, REBUILD_SUFFIX)
        return [compared.get(projection.name) or ReadModelComparison(projection.name, 0, 0, not_compared=REDEFINED)
                for projection in projections]
    finally:
        if collecting:
            gc.enable()
        log.close()
        store.datastore.close()


def _build_from_the_start(store: Any, log: EventLog, projections: list[Any], *, progress: bool, batch_size: int,
                          copy_rows: int, until: int | None = None,
                          on_progress: Callable[[int, int], None] | None = None) -> None:
    """Fill the rebuild tables from position 0 (in memory, else by SQL) up to the log's end as it is now, or to
    position ``until``."""
    log.require_its_key()  # with another key every event would be parked, and every read model left empty
    failed = _build(store, log, projections, in_memory=True, progress=progress, batch_size=batch_size,
                    copy_rows=copy_rows, until=until, on_progress=on_progress)
    if failed:
        # An event the memory build cannot take (a value a column cannot hold, say): build these by SQL,
        # which applies such an event alone and parks it (projections.parking).
        _build(store, log, failed, in_memory=False, progress=progress, batch_size=batch_size, copy_rows=copy_rows,
               until=until, on_progress=on_progress)


def _build(store: Any, log: EventLog, projections: list[Any], *, in_memory: bool, progress: bool, batch_size: int,
           copy_rows: int, until: int | None = None, on_progress: Callable[[int, int], None] | None = None,
           ) -> list[Any]:
    """Fill the rebuild tables from position 0 (to ``until``, if given): in memory and copied, or by the read
    models' SQL.

    Returns the projections whose in-memory build failed on an event (their tables are left for a build by
    SQL); a build by SQL parks such events instead.
    """
    from tqdm import tqdm

    store.create_parked_table()
    for projection in projections:
        store.drop_tables(projection, REBUILD_SUFFIX)
    builds = [MemoryBuild(projection) for projection in projections] if in_memory else []
    if not in_memory:
        store.create_read_model_tables(projections, REBUILD_SUFFIX)
    failed: list[Any] = []

    def guarded(build: MemoryBuild, step: Any) -> None:
        try:
            step()
        except Exception as error:
            if is_transient(error):
                raise
            logger.warning("rebuild of %s: %s; building it by SQL instead, parking what cannot be applied",
                           build.projection.name, describe(error))
            builds.remove(build)
            failed.append(build.projection)

    loader = _Loader(store)

    def fold(build: MemoryBuild, events: list[Any]) -> None:
        loader.check(build.projection)
        build.apply(events)
        if build.out_count >= copy_rows:
            loader.submit(build.projection, build.take_out())

    def finish(build: MemoryBuild) -> None:
        loader.check(build.projection)
        store.finish_rebuilt(build, position)

    for build in builds:
        store.start_rebuilt(build.projection)
    position = 0
    streams: dict[Any, int] = {}  # each stream's last version: a stream that skips one had an event removed
    try:
        with tqdm(total=log.head(), disable=not progress, unit="event", desc="rebuilding read models") as bar:
            for batch in log.scan(0, batch_size):
                if until is not None and batch.end > until:
                    batch = Batch(after=batch.after, end=until,
                                  events=[(at, event) for at, event in batch.events if at <= until])
                    if not batch.events:
                        break
                for _, event in batch.events:
                    refuse_a_gap(event.originator_id, streams.get(event.originator_id, 0), event.originator_version)
                    streams[event.originator_id] = event.originator_version
                for build in list(builds):
                    guarded(build, lambda: fold(build, batch.events))
                if not in_memory:
                    for projection in projections:
                        store.apply_batch(projection, batch, rebuilding=True, wait=True)
                bar.total = max(bar.total or 0, batch.end)
                bar.update(batch.end - position)
                position = batch.end
                if on_progress is not None:
                    on_progress(position, bar.total)
                if until is not None and position >= until:
                    break
    finally:
        loader.close()
    # Each read model's last rows, deferred operations and indexes in a transaction of its own; on PostgreSQL all
    # at once, so that the server builds their indexes side by side (SQLite has one writer at a time: in turn).
    side_by_side = max(1, len(builds)) if store.dialect.is_postgres else 1
    with ThreadPoolExecutor(max_workers=side_by_side, thread_name_prefix="rebuild-finish") as pool:
        finishing = [(build, pool.submit(finish, build)) for build in builds]
    for build, finished in finishing:
        guarded(build, finished.result)
    return failed


class _Loader:
    """Copies the rows that left a rebuild's memory into its tables from a thread of its own, so that the
    database takes them in while the next events are decoded and folded. A projection whose rows failed to load
    raises that error at its next :meth:`check`."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.errors: dict[str, BaseException] = {}
        self._queue: queue.Queue[tuple[Any, Any] | None] = queue.Queue(maxsize=2)
        self._thread = threading.Thread(target=self._load, name="rebuild-loader", daemon=True)
        self._thread.start()

    def submit(self, projection: Any, rows: Any) -> None:
        self._queue.put((projection, rows))

    def check(self, projection: Any) -> None:
        """Raise the error loading this projection's rows met, if any (after what is queued for it is loaded,
        when the loader has stopped)."""
        error = self.errors.pop(projection.name, None)
        if error is not None:
            raise error

    def close(self) -> None:
        """Load what is queued, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _load(self) -> None:
        while (item := self._queue.get()) is not None:
            projection, rows = item
            if projection.name in self.errors:
                continue
            try:
                self.store.copy_rebuilt(projection, rows)
            except BaseException as error:  # noqa: BLE001 - raised in the rebuilding thread
                self.errors[projection.name] = error
