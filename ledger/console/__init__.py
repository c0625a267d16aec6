"""The web console: server-rendered pages over the same application and read side as the REST API.

``console_routes()`` gives the routes to add to the app (pages at the root, ``/static`` for the vendored htmx
and the stylesheet) and ``template_config()`` the Jinja templates; nothing here calls the HTTP API.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Router
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.params import QueryParameter
from litestar.plugins.htmx import HTMXRequest
from litestar.static_files import create_static_files_router

from ledger.api.auth import PUBLIC
from ledger.api.openapi import QUERY_NAMES
from ledger.console.errors import console_error
from ledger.console.login import LoginPages
from ledger.console.playground import PlaygroundPages
from ledger.console.results import ResultPages
from ledger.console.profiles import ImportPage, ProfilePages, form_of
from ledger.console.rendering import SECURITY_HEADERS, STATIC, template_config
from ledger.console.session import ConsoleSecurity, console_guard, csrf_config
from ledger.console.status import StatusPage
from ledger.console.timeline import EventPages

__all__ = ["console_routes", "declare_page_queries", "template_config"]

PAGE = "console_page"
"""The handler ``opt`` key that marks the console's pages (not its static files)."""


def console_routes(import_body_max: int) -> list[Any]:
    """The console's pages (the API's guard checks them, the token cookie standing for the bearer header) and
    its static files (public). The profile forms take bodies up to ``import_body_max``, as the API's import does: a
    profile the API took can be edited and imported again."""

    security = DefineMiddleware(ConsoleSecurity, config=csrf_config())  # one secret for every form

    def pages(*controllers: Any, **layer: Any) -> Router:
        return Router(
            path="/",
            route_handlers=list(controllers),
            guards=[console_guard],
            dependencies={"form": Provide(form_of)},
            middleware=[security],
            exception_handlers={Exception: console_error},
            request_class=HTMXRequest,
            response_headers=SECURITY_HEADERS,  # error pages: console_error adds the same
            include_in_schema=False,
            opt={PAGE: True},
            **layer,
        )

    static = create_static_files_router(
        path="/static", directories=[STATIC], opt=dict(PUBLIC), include_in_schema=False, name="console:static"
    )
    return [
        pages(EventPages, PlaygroundPages, ResultPages, StatusPage, LoginPages),
        # an edit form carries the whole steering, form-encoded: up to about three times its JSON
        pages(ProfilePages, ImportPage, request_max_body_size=import_body_max),
        static,
    ]


def declare_page_queries(app: Litestar) -> None:
    """Each console page takes the query parameters its handler declares, and no other: the API's check refuses the
    rest (422, on the error page). A profile's page asked ``?as_of=`` would else show the present as if it were the
    moment asked, and ``/?tag=a&tag=b`` would filter by the last tag alone."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if not handler.opt.get(PAGE):
                continue
            taken = {}
            for name, field in handler.parsed_fn_signature.parameters.items():
                if isinstance(field.kwarg_definition, QueryParameter):
                    taken[field.kwarg_definition.name or name] = field.is_non_string_sequence
            handler.opt[QUERY_NAMES] = taken
