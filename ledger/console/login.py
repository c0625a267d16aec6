"""``/login`` and ``/logout``: the console asks for an API token once and keeps it in an HttpOnly cookie.

In open mode there is no token; the form asks for a name, which the console records as the actor.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Controller, Request, get, post
from litestar.params import FromQuery
from litestar.response import Redirect, Template

import anyio.to_thread

from ledger.access import Principal
from ledger.api.auth import PUBLIC
from ledger.values import actor_name
from ledger.api.runtime import Runtime
from ledger.console.profiles import Form, runtime_of, see_other
from ledger.console.rendering import page
from ledger.console.session import ACTOR_COOKIE, TOKEN_COOKIE
from ledger.errors import AuthenticationError, ValidationError

LOGIN_PAGE = dict(PUBLIC)  # signing in needs no token; it only sets the browser's cookie


async def check_token(runtime: Runtime, token: str) -> Principal:
    """The principal of ``token``, from the token cache the API's guard uses (reloaded first when stale)."""
    cache = runtime.tokens
    if cache is None:
        raise AuthenticationError("the server is starting; retry shortly")
    if cache.stale:
        await anyio.to_thread.run_sync(lambda: cache.refresh(wait=True))
    return cache.authenticate(token)


def local_path(target: Any) -> str:
    """Where to go after signing in: a path on this server only (never another site)."""
    if isinstance(target, str) and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


SESSION_ENDED = ("Your session ended: the token it was signed in with was revoked or has expired. Sign in again to "
                 "go back to the page you were on (what you typed in a form there is not kept).")


def _cookie_options(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return {"httponly": True, "samesite": "strict", "secure": request.url.scheme == "https", "path": "/"}


class LoginPages(Controller):
    path = "/"

    @get("/login", name="console:login", opt=LOGIN_PAGE)
    async def login_form(self, request: Request[Any, Any, Any], next: FromQuery[str | None] = None,  # noqa: A002
                         ended: FromQuery[bool] = False) -> Template:
        return page(request, "login.html.j2", next=local_path(next), problem=SESSION_ENDED if ended else None)

    @post("/login", name="console:login-submit", opt=LOGIN_PAGE)
    async def login(self, request: Request[Any, Any, Any], form: Form) -> Template | Redirect:
        target = local_path(form.get("next"))
        runtime = runtime_of(request)
        redirect = see_other(target)
        if not runtime.auth:
            name = (form.get("name") or "").strip()
            if not name:
                redirect.delete_cookie(ACTOR_COOKIE, path="/")
                return redirect
            try:
                redirect.set_cookie(ACTOR_COOKIE, quote(actor_name(name, "name")), **_cookie_options(request))
            except ValidationError as refused:
                return page(request, "login.html.j2", status_code=422, next=target, problem=refused.message)
            return redirect
        token = (form.get("token") or "").strip()
        try:
            await check_token(runtime, token)
        except AuthenticationError as refused:  # why, as the API says it: unknown or revoked, expired, malformed
            problem = f"{refused.message[:1].upper()}{refused.message[1:]}."
            return page(request, "login.html.j2", status_code=401, next=target, problem=problem)
        redirect.set_cookie(TOKEN_COOKIE, token, **_cookie_options(request))
        return redirect

    @get("/logout", name="console:logout-address")
    async def logout_address(self) -> Redirect:
        """The logout form's address, opened again: the list, where the form is, rather than a 405."""
        return see_other("/")

    @post("/logout", name="console:logout", opt=LOGIN_PAGE)
    async def logout(self) -> Redirect:
        redirect = see_other("/login")
        redirect.delete_cookie(TOKEN_COOKIE, path="/")
        redirect.delete_cookie(ACTOR_COOKIE, path="/")
        return redirect
