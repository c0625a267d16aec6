"""The Litestar application: controllers, dependencies, lifespan and the one exception handler."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from ledger.api.active import ActiveProfileCache
from ledger.api.auth import TokenCache, authorize
from ledger.api.bodies import strict_json_body
from ledger.api.chat import ChatController, ReplayController, SteeringController
from ledger.api.commands import read_your_writes_middleware
from ledger.api.deps import (
    DEPENDENCIES,
    ApiOptions,
    CompatibilityCheck,
    Services,
    no_compatibility_warnings,
    read_side_reached,
)
from ledger.api.errors import EXCEPTION_HANDLERS
from ledger.api.events import EventController
from ledger.api.exchange import ProfileExchangeController
from ledger.api.idempotency import document_idempotency_key, idempotency_middleware, idempotent_command
from ledger.api.executions import ExecutionController, ProfileExecutionController, RunController
from ledger.api.observability import Metrics, request_context_middleware
from ledger.api.integrity import LedgerController
from ledger.api.openapi import SECURITY_COMPONENTS, security_requirement, tidy_openapi
from ledger.api.ops import OpsController
from ledger.api.profiles import ProfileController
from ledger.api.rebuilds import RebuildJobs
from ledger.api.steering_runtime import SteeringRuntime, load_engine
from ledger.api.tokens import TokenController
from ledger.api.versions import ProfileVersionController
from ledger.application import ProfileLedger
from ledger.console import console_routes, template_config
from ledger.settings import Settings
from ledger.tokens import TokenService
from projections.log import EventLog
from projections.progress import CHANNEL as PROGRESS_CHANNEL
from projections.progress import POLL_SECONDS as PROGRESS_POLL
from projections.progress import ReadSideProgress
from projections.queries import ReadModel
from projections.schema import create_read_side
from projections.store import open_store
from projections.wakeup import Notifications

log = logging.getLogger("ledger.api")

API_VERSION = "1.0.0"
RUNNER_JOIN_TIMEOUT = 10.0


def create_app(
    settings: Settings | None = None,
    *,
    ledger: ProfileLedger | None = None,
    read_model: Any = None,
    run_projections: bool = True,
    compatibility_check: CompatibilityCheck | None = None,
    consistency_timeout: float = 2.0,
    max_body_size: int = 2 * 1024 * 1024,
    ready_max_lag: int = 0,
    sse_heartbeat: float = 15.0,
    debug: bool = False,
    auth: bool | None = None,
    engine: Any = None,
) -> Litestar:
    """The HTTP API over a ledger and its read model.

    Whatever is not given is built in the lifespan from ``settings`` (and closed on shutdown): the
    :class:`ProfileLedger`, the read model, and, when ``run_projections``, a thread running the projection
    workers, woken by every save this process makes. A command is answered once the read models (wherever they
    run) show it, within ``consistency_timeout``; ``Prefer: respond-async`` answers at once.

    ``auth`` (default: ``settings.auth``) asks every request but ``/health``, ``/ready``, ``/metrics`` and
    ``/schema`` for a bearer token whose role the route allows (see :mod:`ledger.api.auth`); ``False`` is
    open mode, where ``X-Actor`` names the actor.

    ``engine`` (a ``steering.engine.SteeringEngine``; default: the model ``settings.model`` names, if any)
    serves ``/v1/chat/completions`` and replays; a steering projector keeps its hook on the active profile.
    """
    settings = settings or Settings.from_env()
    auth = settings.auth if auth is None else auth
    options = ApiOptions(
        consistency_timeout=consistency_timeout,
        max_body_size=max_body_size,
        ready_max_lag=ready_max_lag,
        sse_heartbeat=sse_heartbeat,
    )
    metrics = Metrics()
    services = Services(
        options=options,
        metrics=metrics,
        compatibility_check=compatibility_check or no_compatibility_warnings,
        ledger=ledger,
        read_model=read_model,
        auth=auth,
        database=settings.database,
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        owned: list[Any] = []
        if services.ledger is None:
            services.ledger = ProfileLedger(env=settings.database.eventsourcing_env())
            owned.append(services.ledger)
        services.tokens = TokenCache(TokenService(services.ledger).current)
        if not auth:
            log.warning(
                "AUTHENTICATION IS OFF: anyone who can reach this API may read, change and delete everything, "
                "and X-Actor names the actor. Use open mode for local development only."
            )
        if services.read_model is None:  # the read side over the application's pool and log: one of each
            store = open_store(settings.database, datastore=services.ledger.recorder.datastore)
            create_read_side(store, settings.database)
            log_reader = EventLog(settings.database, app=services.ledger)
            services.read_model = ReadModel(settings.database, store=store, log=log_reader)
            owned.append(services.read_model)
        services.rebuilds = RebuildJobs(settings.database)
        services.progress = ReadSideProgress(
            services.read_model.positions,
            poll_seconds=PROGRESS_POLL["postgres" if settings.database.is_postgres else "sqlite"],
        )
        services.active = ActiveProfileCache(
            services.read_model, sqlite_path=None if settings.database.is_postgres else settings.database.sqlite_path
        )
        channel = getattr(services.ledger.recorder, "channel_name", None)  # PostgreSQL: NOTIFY on every insert
        if settings.database.is_postgres:  # one LISTEN connection for every follower in this process
            services.notifications = Notifications(settings.database.url)
            owned.append(services.notifications)
            services.notifications.subscribe(PROGRESS_CHANNEL, services.progress.notified)
            if channel:
                services.active.watch(services.notifications, channel)
        services.shutdown.clear()
        services.runner_stop.clear()
        _attach_listener(services, metrics)
        if run_projections:
            services.runner = _start_runner(settings, services)
        steering_engine = engine if engine is not None else await anyio.to_thread.run_sync(load_engine, settings)
        if steering_engine is not None:
            services.steering = SteeringRuntime(settings, services.ledger, steering_engine, services.notifications)
            services.steering.start()
            services.generation = services.steering.generation
            metrics.follow_engine(steering_engine.stats)
            if compatibility_check is None:
                services.compatibility_check = services.steering.compatibility_warnings
        log.info("ledger API started on %s", settings.database.display())
        try:
            yield
        finally:
            services.shutdown.set()
            services.runner_stop.set()
            if services.steering is not None:
                metrics.follow_engine(None)
                services.steering.stop()
                services.steering = services.generation = None
            if services.wake is not None:
                services.wake(0)
            if services.runner is not None:
                services.runner.join(RUNNER_JOIN_TIMEOUT)
                services.runner = None
            services.active.close()
            services.progress.close()
            for thing in reversed(owned):
                close = getattr(thing, "close", None)
                if close is not None:
                    close()
            if services.ledger in owned:
                services.ledger = None
            if services.read_model in owned:
                services.read_model = None

    return Litestar(
        route_handlers=[
            ProfileController,
            ProfileVersionController,
            ProfileExchangeController,
            ProfileExecutionController,
            ExecutionController,
            RunController,
            EventController,
            OpsController,
            TokenController,
            LedgerController,
            ChatController,
            ReplayController,
            SteeringController,
            *console_routes(),  # the web console at the root (its own guard, CSRF and templates)
        ],
        template_config=template_config(),
        guards=[authorize] if auth else [],  # open mode: no guard (Litestar copies the handler for each)
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[
            request_context_middleware(metrics),
            read_your_writes_middleware(lambda position: read_side_reached(services, position)),
            idempotency_middleware,
        ],
        lifespan=[lifespan],
        state=State({"services": services}),
        request_max_body_size=max_body_size,
        openapi_config=OpenAPIConfig(
            title="Profile Ledger API",
            version=API_VERSION,
            description=(
                "Steering profiles as an event-sourced ledger. Errors always answer "
                '`{"error": "<code>", "detail": "<message>", ...}`; request validation failures are 422, '
                "an oversized body 413. Commands answer the log position of their last event (`position`, "
                "`X-Ledger-Position`); queries accept `min_position` / `X-Min-Position` to read their writes."
            ),
            path="/schema",
            components=SECURITY_COMPONENTS,
            security=security_requirement(auth),
            render_plugins=[SwaggerRenderPlugin()],
        ),
        before_request=_before_handler,
        on_startup=[tidy_openapi, document_idempotency_key],
        debug=debug,
    )


async def _before_handler(request: Any) -> Any:
    """Strict JSON bodies, then Idempotency-Key (a replayed answer ends the request here)."""
    await strict_json_body(request)
    return await idempotent_command(request)


def _attach_listener(services: Services, metrics: Metrics) -> None:
    """Count appends and wake the projection runner after every save this process makes."""
    ledger = services.ledger
    assert ledger is not None
    if getattr(ledger, "_ledger_api_listener", None) is services:
        return

    def on_save(position: int) -> None:
        if services.shutdown.is_set():
            return
        metrics.observe_append(position)
        if services.active is not None:
            services.active.saw(position)
        if services.wake is not None:
            services.wake(position)

    ledger.add_listener(on_save)
    ledger._ledger_api_listener = services  # type: ignore[attr-defined]


def _start_runner(settings: Settings, services: Services) -> threading.Thread:
    """Run the projection workers in a thread of this process; every save here wakes them at once."""
    from projections.runner import ProjectionWorker, run_projections

    reads = services.read_model
    worker = ProjectionWorker(settings.database, on_applied=services.progress.advanced,
                              store=getattr(reads, "store", None), log=getattr(reads, "log", None),
                              notifications=services.notifications)
    services.wake = worker.wake

    def run() -> None:
        try:
            run_projections(settings.database, services.runner_stop, worker=worker)
        except Exception:
            log.exception("the projection runner stopped with an error")

    thread = threading.Thread(target=run, name="ledger-projections", daemon=True)
    thread.start()
    return thread
