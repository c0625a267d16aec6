"""The composition root of a server process: one ``Runtime``, which the app's lifespan enters and exits.

Entering it builds the :class:`ProfileLedger` (and its connection pool), the read models over that pool with
a log reader, on PostgreSQL the one ``LISTEN`` connection every follower of the log shares, a thread running
the projection workers (woken by every save this process makes), and (unless one is given) the steering
engine with its projector. Exiting stops the threads and closes what it built, in reverse. Handlers are given
the runtime (:mod:`ledger.api.deps`); ``create_app`` assembles the routes around it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio.to_thread

from ledger.api.active import ActiveProfileCache
from ledger.api.auth import TokenCache
from ledger.api.observability import Metrics
from ledger.api.rebuilds import RebuildJobs
from ledger.api.steering_runtime import SteeringRuntime, load_engine
from ledger.application import ProfileLedger
from ledger.chain import VerifyReport
from ledger.idempotency import Answers
from ledger.settings import Database, Settings
from ledger.tokens import TokenService
from ledger.verification import VerifyBusyError
from projections.inline import InlineProjection
from projections.log import EventLog
from projections.progress import CHANNEL as PROGRESS_CHANNEL
from projections.progress import POLL_SECONDS as PROGRESS_POLL
from projections.progress import ReadSideProgress
from projections.queries import ReadModel
from projections.schema import create_read_side
from projections.shares import Shares
from projections.store import open_store
from projections.wakeup import Notifications

log = logging.getLogger("ledger.api")

RUNNER_JOIN_TIMEOUT = 10.0
OTHER_THREADS = 40  # anyio's default pool size: worker threads for everything but generations
RECORDS_PROJECTED_TIMEOUT = 5.0  # at shutdown: how long the worker here may take to apply the last records
LOG_WALK_SECONDS = 1.0  # how often a server walks what was appended to the log since its last walk
WALK_WAIT_SECONDS = 1.0  # how long a request waits for another walk to end (the server's own walks take moments)
T = TypeVar("T")

CompatibilityCheck = Callable[[Any], list[str]]


def walked_ledger(database: Database) -> ProfileLedger:
    """The ledger over ``database``, once its whole log was walked (as ``GET /api/ledger/verify`` walks it; later
    walks start from there, see :meth:`Runtime._walk_what_is_appended`). The streams' versions it finds are ones no
    later read of them may fall short of (a revoked token whose revocation was removed from the log would work
    again); on a log found tampered with, no command is recorded and no token accepted
    (:class:`ledger.signing.SigningEventStore`)."""
    ledger = ProfileLedger(env=database.eventsourcing_env())
    ledger.events.on_tampered = lambda what: log.error(  # type: ignore[attr-defined]
        "the log was tampered with; this server records nothing and accepts no token until the database is restored "
        "(and it restarts): %s", what)
    started = time.monotonic()
    walked = ledger.verify_log(full=False)
    if walked.ok:
        log.info("the log walked: %d events in %.1f s", walked.checked, time.monotonic() - started)
    else:
        say_what_the_walk_found(walked)
    return ledger


def walk_what_is_new(ledger: ProfileLedger, *, aside_if_busy: bool = False) -> None:
    """Walk what any process appended since the last walk (in moments; the snapshots left to the full walks). A walk
    under way is not waited for: each second's finds what this one would have; with ``aside_if_busy``, what is new
    is walked beside it (:meth:`ledger.verification.LogVerifier.walk_aside`)."""
    try:
        walked = ledger.verify_log(full=False, wait=0, snapshots=False)
    except VerifyBusyError:
        if not aside_if_busy:
            return
        walked = ledger.log_verifier.walk_aside()
    if not walked.ok:
        say_what_the_walk_found(walked)


def walked_first(ledger: ProfileLedger, read: Callable[[], T], reached: Callable[[], int] = lambda: 0) -> T:
    """``read()``, once the log up to now was walked: a stream whose last saves were removed before this process
    walked past them is found by the walk, one removed after, by the read. The tokens are read so: a revocation
    removed never gives a token back. A walk under way may have begun before the removal and not reach the stream:
    what is new is walked beside it, rather than waiting for it (a full walk takes half a minute on a large log, and
    one stuck on an unreachable database as long as the pool waits). Only that one may have met the end of the log
    a removal cut: the walk beside it checks the log still reaches where that one, the read side (``reached``) and
    this process's saves saw it reach."""
    ledger.log_verifier.saw_log_reach(reached())
    walk_what_is_new(ledger, aside_if_busy=True)
    return read()


def widen_worker_threads(engine: Any) -> None:
    """Synchronous handlers (reads, commands, a generation waiting for its answer) each hold a worker thread: let
    the pools hold every generation the scheduler may admit (running and queued) plus 40 for everything else, so
    load is bounded by the scheduler's queue (503 when full), not by a pool, and reads and commands never wait
    behind generations or a database's connect timeout. Litestar runs them on the event loop's default executor
    (``min(32, CPUs + 4)`` threads: six on two cores), anyio's ``to_thread`` on its own limiter: both are widened.
    (Call on the event loop.)"""
    scheduler = getattr(engine, "scheduler", None)
    room = OTHER_THREADS + (scheduler.max_batch + scheduler.max_queue if scheduler is not None else 0)
    limiter = anyio.to_thread.current_default_thread_limiter()
    limiter.total_tokens = max(limiter.total_tokens, room)
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(room, thread_name_prefix="ledger-handler"))


def say_what_the_walk_found(walked: VerifyReport) -> None:
    """A snapshot refused, in the server's log (a tampered log is said once, by ``on_tampered``)."""
    if walked.problem == "snapshot_forged":
        log.warning("a snapshot is refused (never used; its aggregate is replayed from its events): %s",
                    walked.tampered())


@dataclass
class ApiOptions:
    consistency_timeout: float = 2.0
    """Seconds a query waits for the projections to reach a requested position, and a command's answer waits
    for the projections to reach the command's position (then it answers, marked ``X-Ledger-Read-Side: pending``)."""
    max_body_size: int = 2 * 1024 * 1024
    ready_max_lag: int = 0
    """/ready answers 503 while a projection is more than this many positions behind the log."""
    sse_heartbeat: float = 15.0
    sse_poll: float = 0.5
    sse_max_streams: int = 100
    """Open event streams this process serves at once; beyond, 503 with ``Retry-After``."""
    page_bytes: int = 1024 * 1024
    """A page of events stops before this many bytes of JSON (always at least one event); ``next_cursor`` goes on."""


@dataclass
class Runtime:
    """Everything the handlers use (see the module's docstring); ``engine`` may be given, and is then not loaded
    here."""

    settings: Settings
    options: ApiOptions = field(default_factory=ApiOptions)
    metrics: Metrics = field(default_factory=Metrics)
    auth: bool = True
    """Whether requests must carry a bearer token (see :mod:`ledger.api.auth`)."""
    run_projections: bool = True
    compatibility_check: CompatibilityCheck | None = None
    """Warnings for a profile about to be activated; default: the steering engine's, when one is loaded."""
    ledger: ProfileLedger | None = None
    read_model: Any = None
    engine: Any = None
    """A ``steering.engine.SteeringEngine``; default: the model ``settings.model`` names, if any."""
    runner: threading.Thread | None = None
    walker: threading.Thread | None = None
    runner_stop: threading.Event = field(default_factory=threading.Event)
    shutdown: threading.Event = field(default_factory=threading.Event)
    wake: Callable[[int], None] | None = None
    tokens: TokenCache | None = None
    steering: SteeringRuntime | None = None
    """The steering runtime when a model is loaded."""
    generation: Any = None
    """Its ``steering.runs.GenerationService``: generation and replay."""
    active: ActiveProfileCache | None = None
    """What answers ``GET /api/profiles/active``."""
    progress: ReadSideProgress | None = None
    """How far the read models have applied the log: waiting for a position."""
    rebuilds: RebuildJobs | None = None
    answers: Answers | None = None
    """The answers kept for retried commands (:mod:`ledger.api.idempotency`)."""
    notifications: Notifications | None = None
    """The process's one PostgreSQL LISTEN; None on SQLite."""
    out_of_space_at: float | None = None
    """When a write last failed for want of space on the database's disk (``time.monotonic()``): ``/ready``."""

    @property
    def database(self) -> Database:
        return self.settings.database

    def check_compatibility(self, profile: Any) -> list[str]:
        check = self.compatibility_check or (self.steering.compatibility_warnings if self.steering else None)
        return check(profile) if check is not None else []

    @functools.cached_property
    def stream_shares(self) -> Shares:
        """Each client's share of this server's event streams (``options.sse_max_streams``, as set when it starts)."""
        return Shares(self.options.sse_max_streams, "event streams")

    @functools.cached_property
    def allowed_hosts(self) -> frozenset[str] | None:
        """The host names requests may name besides ``localhost`` and IP addresses (None: any)."""
        return self.settings.host_allowlist(self.auth)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Build what the handlers use, start the threads; on exit stop them and close what was built here."""
        database = self.database
        self.ledger = await anyio.to_thread.run_sync(walked_ledger, database)  # before the server listens
        service = TokenService(self.ledger)
        self.tokens = TokenCache(functools.partial(walked_first, self.ledger, service.current,
                                                   lambda: self.progress.reached if self.progress else 0),
                                 check=service.refuse_on_a_tampered_log)
        if not self.auth:
            log.warning(
                "AUTHENTICATION IS OFF: anyone who can reach this API may read, change and delete everything, "
                "and X-Actor names the actor. Use open mode for local development only."
            )
        # the read side over the application's pool and log: one of each
        store, events = open_store(database, datastore=self.ledger.recorder.datastore), EventLog(database, app=self.ledger)
        create_read_side(store, database, events.events_table)
        self.read_model = ReadModel(database, store=store, log=events)
        self.rebuilds = RebuildJobs(database, self.ledger.recorder.datastore, store.parked_counts)
        self.answers = Answers(self.ledger.recorder.datastore, self.ledger.mapper.keys)  # type: ignore[attr-defined]
        self.progress = ReadSideProgress(
            self.read_model.positions, poll_seconds=PROGRESS_POLL["postgres" if database.is_postgres else "sqlite"]
        )
        if self.settings.inline_projections:
            self.ledger.recorder.in_transaction = InlineProjection(
                store, self.read_model.log, reached=self.progress.advanced
            )
        sqlite_path = None if database.is_postgres else database.sqlite_path
        self.active = ActiveProfileCache(self.read_model, sqlite_path=sqlite_path)
        if database.is_postgres:  # one LISTEN connection for every follower in this process
            self.notifications = Notifications(database.url)
            self.notifications.subscribe(PROGRESS_CHANNEL, self.progress.notified)
            # the event store's NOTIFY on every insert: a write by another process moves the active cache on
            self.notifications.subscribe(self.ledger.recorder.channel_name, lambda _: self.active.saw())
        self.shutdown.clear()
        self.runner_stop.clear()
        self._follow_saves(self.ledger)
        self.walker = threading.Thread(target=self._walk_what_is_appended, args=(self.ledger,), daemon=True,
                                       name="log-walker")
        self.walker.start()
        if self.run_projections:
            self.runner = self._start_runner()
        engine = self.engine if self.engine is not None else await anyio.to_thread.run_sync(load_engine, self.settings)
        widen_worker_threads(engine)
        if engine is not None:
            self.steering = SteeringRuntime(self.settings, self.ledger, engine, self.notifications)
            self.steering.start()
            self.generation = self.steering.generation
            self.metrics.follow_engine(engine.stats)
        log.info("ledger API started on %s", database.display())
        try:
            yield
        finally:
            self._stop()

    def begin_shutdown(self, generation_grace_s: float) -> None:
        """The server is about to stop (from any thread): event streams end, and generations drain: no new ones, those
        waiting for a place are refused, those running are cut short after ``generation_grace_s`` seconds (see
        ``SteeringEngine.drain``), so each is answered, and recorded, before the server's own grace runs out."""
        self.shutdown.set()
        if self.steering is not None:
            threading.Thread(target=self.steering.engine.drain, args=(generation_grace_s,), daemon=True,
                             name="steering-drain").start()

    def _stop(self) -> None:
        assert self.ledger is not None and self.active is not None and self.progress is not None
        self.shutdown.set()
        if self.steering is not None:  # first: what it records as it stops is projected as every other write is
            self.metrics.follow_engine(None)
            self.steering.stop()
            self.steering = self.generation = None
            if self.runner is not None:  # (not inline: the worker here applies it, up to the log's head)
                self.progress.wait_for(int(self.ledger.recorder.max_notification_id() or 0), RECORDS_PROJECTED_TIMEOUT)
        self.ledger.recorder.in_transaction = None
        self.runner_stop.set()
        if self.walker is not None:
            self.walker.join(RUNNER_JOIN_TIMEOUT)
            self.walker = None
        if self.wake is not None:
            self.wake(0)
        if self.runner is not None:
            self.runner.join(RUNNER_JOIN_TIMEOUT)
            self.runner = None
        self.active.close()
        self.progress.close()
        if self.notifications is not None:
            self.notifications.close()
        self.read_model.close()
        self.ledger.close()
        self.ledger = self.read_model = self.notifications = None

    def _walk_what_is_appended(self, ledger: ProfileLedger) -> None:
        """Walk the events appended since the last walk, every :data:`LOG_WALK_SECONDS` (other processes' too): the
        versions no read may fall short of keep up with the log, and an event removed anywhere is found before or
        after this process walks past it."""
        events: Any = ledger.events
        while not self.runner_stop.wait(LOG_WALK_SECONDS) and events.tampered is None:  # found: nothing more to do
            try:
                walk_what_is_new(ledger)
            except Exception as error:  # noqa: BLE001 - the database away, another walk under way: the next round
                log.debug("the log walk did not run: %s", error)

    def _follow_saves(self, ledger: ProfileLedger) -> None:
        """Count saves and wake the projection runner after every save this process makes (and tell the log's walks
        how far this process saw the log reach)."""

        def on_save(position: int) -> None:
            ledger.log_verifier.saw_log_reach(position)
            if self.runner_stop.is_set():  # stopped: (the shutdown's drain, before, still records and projects)
                return
            self.metrics.saves.inc()
            self.active.saw()
            if self.wake is not None and position > self.progress.reached:
                self.wake(position)  # not projected inline (or not all of it): the worker applies it

        ledger.add_listener(on_save)

    def _start_runner(self) -> threading.Thread:
        """Run the projection workers in a thread of this process; every save here wakes them at once."""
        from projections.runner import ProjectionWorker, run_projections

        progress, reads = self.progress, self.read_model
        assert progress is not None
        worker = ProjectionWorker(self.database, on_applied=progress.advanced, reached=lambda: progress.reached,
                                  store=reads.store, log=reads.log, notifications=self.notifications)
        self.wake = worker.wake

        def run() -> None:
            try:
                run_projections(self.database, self.runner_stop, worker=worker)
            except Exception:
                log.exception("the projection runner stopped with an error")

        thread = threading.Thread(target=run, name="ledger-projections", daemon=True)
        thread.start()
        return thread
