"""Who is using the console: a token kept in an HttpOnly cookie, the role it grants, and CSRF protection.

The REST API reads ``Authorization: Bearer``; a browser cannot add that header to a link or a form, so the
console asks for the token once (``/login``) and keeps it in a cookie (HttpOnly, SameSite=Strict, Secure over
HTTPS). Console routes are public to the API's guard and checked here instead, with the same token cache and
the same role order: ``opt=requires(role)`` on a handler, otherwise reader for reading and editor for the rest.
Forms carry a CSRF token (Litestar's CSRF middleware, double submit: a signed cookie and a form field or the
``X-CSRFToken`` header that htmx sends). In open mode there is no token: the login form only asks for a name
to record as the actor.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from ledger.access import ROLES, Principal, role_allows
from ledger.api.auth import PRINCIPAL_KEY, ROLE_KEY, SAFE_METHODS, TokenCache
from ledger.api.deps import ACTOR_MAX, Services
from ledger.api.observability import correlation_id
from ledger.domainmodel import CommandContext
from ledger.errors import AuthenticationError, PermissionDeniedError

TOKEN_COOKIE = "ledger_console_token"
ACTOR_COOKIE = "ledger_console_actor"
CSRF_COOKIE = "ledger_console_csrf"
CSRF_HEADER = "x-csrftoken"
VIEWER_KEY = "console_viewer"
SECRET_VARIABLE = "LEDGER_CONSOLE_SECRET"


class LoginRequiredError(AuthenticationError):
    """A console page was asked for without a valid token cookie: the answer is the login form."""

    code = "login_required"


@dataclass(frozen=True)
class Viewer:
    """The person behind a console request, as the templates see them."""

    name: str
    role: str  # "admin" in open mode: every control is shown
    open_mode: bool

    def can(self, role: str) -> bool:
        return role_allows(self.role, role)


def csrf_config() -> CSRFConfig:
    """Double-submit CSRF tokens for the console's forms, signed with ``LEDGER_CONSOLE_SECRET`` (the same on every
    server behind one address) or else a secret drawn at start-up."""
    return CSRFConfig(
        secret=os.environ.get(SECRET_VARIABLE, "").strip() or secrets.token_urlsafe(32),
        cookie_name=CSRF_COOKIE,
        cookie_samesite="strict",
        cookie_httponly=True,
        header_name=CSRF_HEADER,
    )


def console_role(handler: BaseRouteHandler, method: str) -> str:
    declared = (handler.opt or {}).get(ROLE_KEY)
    if declared:
        return str(declared)
    return "reader" if method.upper() in SAFE_METHODS else "editor"


async def authenticate(services: Services, token: str) -> Principal:
    """The principal of ``token`` (refreshing the token cache as the API's guard does)."""
    cache: TokenCache | None = services.tokens
    if cache is None:
        raise AuthenticationError("the server is starting; retry shortly")
    if cache.stale:
        if cache.usable_while_reloading:
            cache.refresh_in_background()
        else:
            await anyio.to_thread.run_sync(lambda: cache.refresh(wait=False))
    return cache.authenticate(token)


async def console_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Every console route: the token cookie's role must allow the route (open mode: everyone may)."""
    services: Services = connection.app.state.services
    if not services.auth:
        actor = (connection.cookies.get(ACTOR_COOKIE) or "").strip()[:ACTOR_MAX] or "anonymous"
        connection.state[VIEWER_KEY] = Viewer(name=actor, role=ROLES[-1], open_mode=True)
        return
    if (handler.opt or {}).get("login_page"):
        return
    token = connection.cookies.get(TOKEN_COOKIE)
    if not token:
        raise LoginRequiredError("sign in with an API token to use the console")
    try:
        principal = await authenticate(services, token)
    except AuthenticationError:
        raise LoginRequiredError("the token of this session is unknown or was revoked; sign in again") from None
    role = console_role(handler, connection.scope.get("method", "GET"))
    if not role_allows(principal.role, role):
        raise PermissionDeniedError(
            f"this needs the {role} role; the token of {principal.name!r} has the {principal.role} role",
            required_role=role,
            role=principal.role,
        )
    connection.state[PRINCIPAL_KEY] = principal
    connection.state[VIEWER_KEY] = Viewer(name=principal.name, role=principal.role, open_mode=False)


def viewer_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Viewer | None:
    return connection.state.get(VIEWER_KEY)  # type: ignore[no-any-return]


def command_context(connection: ASGIConnection[Any, Any, Any, Any], reason: str | None = None) -> CommandContext:
    """The actor (the token's name, or in open mode the name given at sign-in), the reason and the request."""
    viewer = viewer_of(connection)
    actor = viewer.name if viewer is not None else "anonymous"
    reason = (reason or "").strip()[:1000] or None
    return CommandContext(actor=actor, reason=reason, correlation_id=correlation_id(connection.scope))
