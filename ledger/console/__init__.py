"""The web console: server-rendered pages over the same application and read side as the REST API.

``console_routes()`` gives the routes to add to the app (pages at the root, ``/static`` for the vendored htmx
and the stylesheet) and ``template_config()`` the Jinja templates; nothing here calls the HTTP API.
"""

from __future__ import annotations

from typing import Any

from litestar import Router
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.plugins.htmx import HTMXRequest
from litestar.static_files import create_static_files_router

from ledger.api.auth import PUBLIC
from ledger.console.errors import console_error
from ledger.console.login import LoginPages
from ledger.console.playground import PlaygroundPages
from ledger.console.results import ResultPages
from ledger.console.profiles import ImportPage, ProfilePages, form_of
from ledger.console.rendering import SECURITY_HEADERS, STATIC, template_config
from ledger.console.session import ConsoleSecurity, console_guard, csrf_config
from ledger.console.status import StatusPage
from ledger.console.timeline import EventPages

__all__ = ["console_routes", "template_config"]


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
