"""Who may call what: bearer tokens, roles declared per route, and an in-memory cache of the tokens.

Every route needs a role, declared with ``opt`` on the handler or its controller::

    @post("/v1/chat/completions", opt=requires("editor"))     # or: class Chat(Controller): opt = requires("editor")

A route that declares nothing needs ``reader`` for GET/HEAD/OPTIONS and ``editor`` for anything else;
``opt=PUBLIC`` (and the OpenAPI document under ``/schema``) needs no token. Roles are ordered
reader < editor < admin. Without a valid ``Authorization: Bearer <token>`` a request answers 401, with a role
too low 403, both in the API's error shape.

Checking a token costs no database round trip: the ``AccessTokens`` aggregate is cached in memory and
reloaded when it is older than ``max_age`` (1 s), in the background while requests go on with the copy they
have, and at once (requests waiting) after this process issues or revokes a token. A token revoked through
another process (another server, the CLI) is refused here within that bound and the reload's time; an open
event stream checks its token the same way every half second and ends when it is revoked or expires. A token
whose id the cached copy does not know (issued through another process a moment ago) makes the request reload
the tokens first, unless a reload began after it arrived (requests waiting together reload once; a reload reads
only the events since the copy, one indexed query): a token is usable on every server as soon as it is issued.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from ledger.access import AccessTokens, Principal, parse_token, role_allows
from ledger.errors import AuthenticationError, PermissionDeniedError
from projections.shares import reader

log = logging.getLogger("ledger.api")

ROLE_KEY = "role"
PUBLIC_KEY = "public"
PUBLIC: dict[str, Any] = {PUBLIC_KEY: True}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PRINCIPAL_KEY = "principal"
TOKEN_MAX_AGE = 1.0


def requires(role: str) -> dict[str, Any]:
    """The ``opt`` of a route (or controller) that needs ``role``."""
    return {ROLE_KEY: role}


def required_role(handler: BaseRouteHandler, method: str, schema_path: str = "/schema") -> str | None:
    """The role a request to ``handler`` with ``method`` needs; None for a public route."""
    opt = handler.opt or {}
    owner_path = str(getattr(handler.owner, "path", "") or "").rstrip("/")
    paths = {*handler.paths, *(owner_path + path for path in handler.paths)}
    if opt.get(PUBLIC_KEY) or any(path == schema_path or path.startswith(schema_path + "/") for path in paths):
        return None
    declared = opt.get(ROLE_KEY)
    if declared:
        return str(declared)
    return "reader" if method.upper() in SAFE_METHODS else "editor"


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    given = connection.headers.getall("authorization", [])
    if len(given) > 1:
        raise AuthenticationError("a request carries one Authorization header, not several")
    header = given[0] if given else None
    if not header:
        raise AuthenticationError("this request needs an `Authorization: Bearer <token>` header")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("the Authorization header must read `Bearer <token>`")
    return token.strip()


UNKNOWN_ID_RELOAD_INTERVAL = 0.1
"""Seconds between the reloads that requests with token ids the cached copy does not know may ask for."""


class TokenCache:
    """The ``AccessTokens`` aggregate, held in memory and reloaded when older than ``max_age`` seconds."""

    def __init__(
        self,
        load: Callable[[], AccessTokens | None],
        max_age: float = TOKEN_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
        check: Callable[[], None] = lambda: None,
    ) -> None:
        self._load, self.max_age, self.clock, self.check = load, max_age, clock, check
        """``check`` raises when no token may be accepted at all (``TokenService.refuse_on_a_tampered_log``)."""
        self._tokens: AccessTokens | None = None
        self._loaded_at: float | None = None
        self._begun_at: float | None = None  # when the last reload began
        self._generation = 0  # bumped by invalidate(): a reload that began before it does not count as fresh
        self._lock = threading.Lock()
        self._reloading = False

    @property
    def stale(self) -> bool:
        return self._loaded_at is None or self.clock() - self._loaded_at >= self.max_age

    def refresh(self, *, wait: bool = True, unless_begun_since: float | None = None) -> None:
        """Reload the tokens. With ``wait=False`` a reload already under way elsewhere is not waited for
        (unless nothing was ever loaded): requests keep using the copy they have. A reload that began at or after
        ``unless_begun_since`` (a clock reading) is enough: requests that waited for it do not make another."""
        if not self._lock.acquire(blocking=wait or self._loaded_at is None):
            return
        try:
            if unless_begun_since is not None and self._begun_at is not None and self._begun_at >= unless_begun_since:
                return
            started, generation = self.clock(), self._generation
            self._begun_at = started
            self._tokens = self._load()
            if generation == self._generation:
                self._loaded_at = started
        finally:
            self._lock.release()

    @property
    def usable_while_reloading(self) -> bool:
        """Whether requests may keep using this copy while a reload runs in the background: it was loaded, not
        invalidated, and is less than twice ``max_age`` old (a reload that keeps failing ends that)."""
        loaded_at = self._loaded_at
        return loaded_at is not None and self.clock() - loaded_at < 2 * self.max_age

    def refresh_in_background(self) -> None:
        """Start a reload in a thread unless one is under way (call from the event loop's thread)."""
        if self._reloading:
            return
        self._reloading = True

        def reload() -> None:
            try:
                self.refresh(wait=False)
            except Exception as error:  # noqa: BLE001 - the next request past the bound reloads and reports it
                log.warning("reloading the access tokens failed: %s", error)
            finally:
                self._reloading = False

        threading.Thread(target=reload, name="token-reload", daemon=True).start()

    def wait_before_reloading(self, arrived: float) -> float:
        """How long a request whose token id the copy does not know waits before it reloads (``arrived``: its clock
        reading): such reloads begin at most every :data:`UNKNOWN_ID_RELOAD_INTERVAL` seconds, so made-up ids cost
        the database at most a few reads a second, and the requests that wait together share one reload."""
        begun = self._begun_at
        return 0.0 if begun is None else max(0.0, begun + UNKNOWN_ID_RELOAD_INTERVAL - arrived)

    def knows(self, token: str) -> bool:
        """Whether the cached copy has a record of ``token``'s id (live or not); a malformed token counts as known."""
        try:
            token_id, _ = parse_token(token)
        except AuthenticationError:
            return True
        tokens = self._tokens
        return tokens is not None and token_id in tokens.tokens

    def invalidate(self) -> None:
        self._generation += 1
        self._loaded_at = None

    async def still_allows(self, principal: Principal) -> bool:
        """Whether ``principal``'s token is still live (not revoked, not expired), for a request that outlives
        one check (an event stream): a stale cache is reloaded first, without waiting for a reload under way."""
        if self.stale:
            await anyio.to_thread.run_sync(lambda: self.refresh(wait=False))
        return self._allows(principal)

    def still_allows_here(self, principal: Principal) -> bool:
        """:meth:`still_allows`, from a worker thread (a streamed answer's)."""
        if self.stale:
            self.refresh(wait=False)
        return self._allows(principal)

    def _allows(self, principal: Principal) -> bool:
        self.check()
        tokens = self._tokens
        return tokens is not None and tokens.allows(principal)

    def authenticate(self, token: str) -> Principal:
        """Check ``token`` against the cached tokens (the caller refreshes a stale cache first)."""
        self.check()
        tokens = self._tokens
        if tokens is None:
            raise AuthenticationError("the token is unknown or revoked")
        return tokens.authenticate(token)


async def authorize(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """The app's guard: authenticate the bearer token and check the role the route declares."""
    runtime = connection.app.state.runtime
    if not runtime.auth:
        return
    role = required_role(handler, connection.scope.get("method", "GET"), connection.app.openapi_config.path)
    if role is None:
        return
    token = bearer_token(connection)
    cache: TokenCache = runtime.tokens
    if cache.stale:
        if cache.usable_while_reloading:  # no request waits for the periodic reload (it cost 16% of throughput)
            cache.refresh_in_background()
        else:
            await anyio.to_thread.run_sync(lambda: cache.refresh(wait=False))
    if not cache.knows(token):  # issued through another process since the last reload, perhaps
        arrived = cache.clock()
        await anyio.sleep(cache.wait_before_reloading(arrived))
        await anyio.to_thread.run_sync(lambda: cache.refresh(unless_begun_since=arrived))
    principal = cache.authenticate(token)
    if not role_allows(principal.role, role):
        raise PermissionDeniedError(
            f"this request needs the {role} role; the token of {principal.name!r} has the {principal.role} role",
            required_role=role,
            role=principal.role,
        )
    connection.state[PRINCIPAL_KEY] = principal
    if reader.get() is not None:  # a read: its share of the database connections (projections.shares)
        reader.set(f"token {principal.name}")


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """The principal the guard authenticated, or None (open mode, public route)."""
    return connection.state.get(PRINCIPAL_KEY)  # type: ignore[no-any-return]
