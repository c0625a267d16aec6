"""The Litestar application: controllers, dependencies and the one exception handler, around the runtime."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Response, Router
from litestar.enums import MediaType
from litestar.status_codes import HTTP_204_NO_CONTENT
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig

from ledger.api.auth import authorize
from ledger.api.bodies import refuse_cross_site, refuse_repeated_headers, refuse_unknown_host, strict_json_body
from ledger.api.chat import ChatController, ReplayController, SteeringController
from ledger.api.commands import read_your_writes_middleware
from ledger.api.docs_page import DOCS_PATH, docs_page, docs_router
from ledger.api.deps import DEPENDENCIES, read_side_reached
from ledger.api.errors import allow_header
from ledger.api.events import EventController
from ledger.api.exchange import IMPORT_BODY_FACTOR, ProfileExchangeController
from ledger.api.idempotency import idempotency_middleware, idempotent_command
from ledger.api.executions import ExecutionController, ProfileExecutionController, RunController
from ledger.api.observability import request_context_middleware
from ledger.api.integrity import LedgerController
from ledger.api.openapi import (
    BEARER,
    SECURITY_COMPONENTS,
    refuse_unheeded_precondition,
    refuse_unknown_query,
    tidy_openapi,
)
from ledger.api.ops import OpsController
from ledger.api.profiles import ProfileController
from ledger.api.runtime import ApiOptions, CompatibilityCheck, Runtime
from ledger.api.tokens import TokenController
from ledger.api.versions import ProfileVersionController
from ledger.console import console_routes, declare_page_queries, template_config
from ledger.console.errors import app_error
from ledger.settings import Settings

API_VERSION = "1.0.0"


def create_app(
    settings: Settings | None = None,
    *,
    run_projections: bool = True,
    compatibility_check: CompatibilityCheck | None = None,
    auth: bool | None = None,
    engine: Any = None,
    **options: Any,
) -> Litestar:
    """The HTTP API and the web console around one :class:`Runtime` (see :mod:`ledger.api.runtime`).

    What it serves is built when the app starts, from ``settings`` (and closed on shutdown): the
    :class:`ProfileLedger`, the read model, and, when ``run_projections``, a thread running the projection
    workers. A command is answered once the read models (wherever they run) show it, within
    ``consistency_timeout`` (one of the :class:`ApiOptions` that ``options`` sets); ``Prefer: respond-async``
    answers at once.

    ``auth`` (default: ``settings.auth``) asks every request but ``/health``, ``/ready``, ``/metrics`` and
    ``/schema`` for a bearer token whose role the route allows (see :mod:`ledger.api.auth`); ``False`` is
    open mode, where ``X-Actor`` names the actor.

    ``engine`` (a ``steering.engine.SteeringEngine``; default: the model ``settings.model`` names, if any)
    serves ``/v1/chat/completions`` and replays; a steering projector keeps its hook on the active profile.
    """
    settings = settings or Settings.from_env()
    runtime = Runtime(
        settings, ApiOptions(**options), auth=settings.auth if auth is None else auth, run_projections=run_projections,
        compatibility_check=compatibility_check, engine=engine,
    )
    import_body_max = IMPORT_BODY_FACTOR * runtime.options.max_body_size  # an export of any profile imports again
    return Litestar(
        route_handlers=[
            ProfileController,
            ProfileVersionController,
            Router("/", route_handlers=[ProfileExchangeController], request_max_body_size=import_body_max),
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
            *console_routes(import_body_max),  # the web console at the root (its own guard, CSRF and templates)
        ],
        template_config=template_config(),
        guards=[authorize] if runtime.auth else [],  # open mode: no guard (Litestar copies the handler for each)
        dependencies=DEPENDENCIES,
        exception_handlers={Exception: app_error},
        middleware=[
            request_context_middleware(runtime.metrics),
            read_your_writes_middleware(lambda position: read_side_reached(runtime, position)),
            idempotency_middleware,
        ],
        lifespan=[lambda _: runtime.running()],
        state=State({"runtime": runtime}),
        request_max_body_size=runtime.options.max_body_size,
        openapi_config=OpenAPIConfig(
            title="Profile Ledger API",
            version=API_VERSION,
            description=(
                "Steering profiles as an event-sourced ledger. Errors always answer "
                '`{"error": "<code>", "detail": "<message>", ...}`; request validation failures are 422, '
                "an oversized body 413. Commands on profiles and executions answer the log position of their "
                "last event (`position`, `X-Ledger-Position`); queries accept `min_position` / `X-Min-Position` "
                "to read their writes."
            ),
            path=DOCS_PATH,
            components=SECURITY_COMPONENTS,
            security=[{BEARER: []}] if runtime.auth else None,
            render_plugins=[docs_page()],
            openapi_router=docs_router(),
        ),
        before_request=_before_handler,
        on_startup=[tidy_openapi, declare_page_queries],
    )


async def _before_handler(request: Any) -> Any:
    """Unknown host names, changes from other sites and unknown query parameters refused, strict JSON bodies, then
    Idempotency-Key (a replayed answer ends the request here)."""
    refuse_unknown_host(request, request.app.state.runtime.allowed_hosts)
    refuse_cross_site(request)
    refuse_repeated_headers(request)
    refuse_unknown_query(request)
    refuse_unheeded_precondition(request)
    if request.method == "OPTIONS":
        return _allowed_methods(request)
    await strict_json_body(request)
    return await idempotent_command(request)


def _allowed_methods(request: Any) -> Any:
    """``OPTIONS``: every method of the path in ``Allow`` (Litestar's own answer names only those of the handlers
    that were registered before the path's first ``OPTIONS`` handler was made, such as ``POST`` without ``GET``),
    HEAD with GET."""
    paths = request.route_handler.paths
    methods = {method for path in paths for method in request.app.route_handler_method_map.get(path, {})}
    return Response(None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": allow_header(methods)},
                    media_type=MediaType.TEXT)
