"""Who is using the console: a token kept in an HttpOnly cookie, the role it grants, and CSRF protection.

The REST API reads ``Authorization: Bearer``; a browser cannot add that header to a link or a form, so the
console asks for the token once (``/login``) and keeps it in a cookie (HttpOnly, SameSite=Strict, Secure over
HTTPS). On console routes the cookie stands for the header (:class:`ConsoleSecurity`), so the API's own guard
checks every console action with the same roles: ``opt=requires(role)`` on a handler, otherwise reader for
reading and editor for the rest. Forms carry a CSRF token (Litestar's CSRF middleware, double submit: a signed
cookie and a form field or the ``X-CSRFToken`` header that htmx sends); a request whose credentials do not come
from the cookie (none, or a bearer header a cross-site form cannot send) needs none. In open mode there is no
token: every form carries its CSRF token, and ``/login`` only asks for a name to record as the actor.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import anyio.to_thread
from litestar._parsers import parse_url_encoded_form_data
from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.enums import RequestEncodingType
from litestar.exceptions import PermissionDeniedException
from litestar.middleware.csrf import CSRFMiddleware
from litestar.utils.scope.state import ScopeState
from litestar.types import Receive, Scope, Send

from ledger.access import ROLES, role_allows
from ledger.api.auth import PUBLIC_KEY, SAFE_METHODS, authorize, principal_of
from ledger.values import actor_name
from ledger.api.observability import correlation_id
from ledger.domainmodel import CommandContext
from ledger.errors import ValidationError

TOKEN_COOKIE = "ledger_console_token"
ACTOR_COOKIE = "ledger_console_actor"
CSRF_COOKIE = "ledger_console_csrf"
CSRF_HEADER = "x-csrftoken"
CSRF_REFUSED = "CSRF token verification failed"  # what Litestar's check says when it refuses a form
VIEWER_KEY = "console_viewer"
SECRET_VARIABLE = "LEDGER_CONSOLE_SECRET"
FORM_FIELDS_MAX = 1000  # as many as Litestar lets a multipart form have


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


def _cookies(value: bytes) -> list[bytes]:
    """The ``name=value`` parts of a ``Cookie`` header."""
    return [part.strip() for part in value.split(b";")]


def _cookie(scope: Scope, name: str) -> str | None:
    prefix = name.encode() + b"="
    for header, value in scope["headers"]:
        if header == b"cookie":
            for part in _cookies(value):
                if part.startswith(prefix):
                    return part[len(prefix):].decode("latin-1").strip('"')
    return None


def _secure_cookies(send: Send) -> Send:
    """``send``, with the CSRF cookie set ``Secure``, as the token cookie is, when the page came over HTTPS."""

    async def sending(message: Any) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [
                (name, value + b"; Secure" if name == b"set-cookie" and value.startswith(CSRF_COOKIE.encode() + b"=")
                 and b"secure" not in value.lower() else value) for name, value in message.get("headers", ())]}
        await send(message)

    return sending


def _without_cookie(headers: Any, name: str) -> Any:
    prefix = name.encode() + b"="
    for header, value in headers:
        if header == b"cookie":
            value = b"; ".join(part for part in _cookies(value) if not part.startswith(prefix))
        yield header, value


class ConsoleSecurity(CSRFMiddleware):
    """The token cookie as the request's bearer credentials, and the CSRF check wherever that cookie (or open
    mode) is what would authorise the request."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        auth = scope["litestar_app"].state.runtime.auth
        headers = scope["headers"]
        has_bearer = any(name == b"authorization" for name, _ in headers)
        token = _cookie(scope, TOKEN_COOKIE) or None
        if auth and token and not has_bearer:
            scope["headers"] = [*headers, (b"authorization", f"Bearer {token}".encode("latin-1"))]
        stale = _cookie(scope, CSRF_COOKIE)
        if scope["method"] in SAFE_METHODS and stale is not None and self._decode_csrf_token(stale) is None:
            # signed with another secret (a server since restarted, another server on this host), or empty: the
            # page gets a new one, so its forms work again, rather than every form failing until it is cleared
            scope["headers"] = [*_without_cookie(scope["headers"], CSRF_COOKIE)]
        cookie_authorises = not auth or (token is not None and not has_bearer)
        signing_in = bool(scope["route_handler"].opt.get(PUBLIC_KEY))  # the sign-in forms are checked too
        if scope["method"] not in SAFE_METHODS:  # before anything reads the form, with a cookie or a bearer header
            request = scope["litestar_app"].request_class(scope=scope, receive=receive)
            if auth:  # a token that is no token, or a role that may not: refused before its body is read
                await authorize(request, scope["route_handler"])
            await _read_form_aside(request)
            if not cookie_authorises and not signing_in:
                await self.app(scope, receive, send)  # nothing ambient to forge: the guard decides
                return
        try:
            await super().__call__(scope, receive, _secure_cookies(send) if scope.get("scheme") == "https" else send)
        except PermissionDeniedException as error:
            if error.detail != CSRF_REFUSED:
                raise
            raise PermissionDeniedException(
                "this form's security token does not match this browser's (the page was shown before the server "
                "restarted, or the form came from another site): nothing was changed; reload the page and send "
                "it again") from None


async def _read_form_aside(request: Any) -> None:
    """An URL-encoded form, parsed once in a worker thread, with at most :data:`FORM_FIELDS_MAX` fields (the CSRF
    check and the handler then read it parsed): a form as large as a profile, or one of millions of empty fields,
    never holds the event loop and every other request with it."""
    content_type, _ = request.content_type
    if content_type != RequestEncodingType.URL_ENCODED:
        return  # (multipart forms: Litestar streams them and bounds their parts)
    body = await request.body()
    if body.count(b"&") >= FORM_FIELDS_MAX:
        raise ValidationError(f"a form has at most {FORM_FIELDS_MAX} fields", field="form")
    parse = parse_url_encoded_form_data.__wrapped__  # (Litestar's keeps the last 1,024 bodies and all they hold)
    ScopeState.from_scope(request.scope).form = await anyio.to_thread.run_sync(parse, body)


async def console_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Who the templates greet (after the API's guard has checked the token and the route's role)."""
    runtime = connection.app.state.runtime
    if not runtime.auth:
        try:
            actor = actor_name(unquote(connection.cookies.get(ACTOR_COOKIE) or ""), "name")
        except ValidationError:
            actor = "anonymous"  # no name given (or a cookie not set by the sign-in form)
        connection.state[VIEWER_KEY] = Viewer(name=actor, role=ROLES[-1], open_mode=True)
        return
    principal = principal_of(connection)
    if principal is not None:
        connection.state[VIEWER_KEY] = Viewer(name=principal.name, role=principal.role, open_mode=False)


def viewer_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Viewer | None:
    return connection.state.get(VIEWER_KEY)  # type: ignore[no-any-return]


def command_context(connection: ASGIConnection[Any, Any, Any, Any], reason: str | None = None) -> CommandContext:
    """The actor (the token's name, or in open mode the name given at sign-in), the reason and the request."""
    viewer = viewer_of(connection)
    actor = viewer.name if viewer is not None else "anonymous"
    reason = (reason or "").strip() or None  # (one past REASON_MAX is refused, as the API refuses it)
    return CommandContext(actor=actor, reason=reason, correlation_id=correlation_id(connection.scope))
