"""Errors on console routes: the API's one mapping decides the status and the words. A browser gets them as a
page (or, without a valid session, is sent to the sign-in form); any other client gets the API's JSON error."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from litestar import Request, Response

from ledger.api.errors import handle_exception
from ledger.console.profiles import see_other
from ledger.console.rendering import is_htmx, page, secured, wants_html
from ledger.console.session import TOKEN_COOKIE
from ledger.errors import AuthenticationError


API_PATHS = ("/api/", "/v1/", "/schema", "/health", "/ready", "/metrics")


def app_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The app's handler, for what no router handled (an address no route has, a method a route lacks): a page for
    a browser outside the API's paths, else the API's answer."""
    return (handle_exception if request.url.path.startswith(API_PATHS) else console_error)(request, exc)


def _back_after_login(request: Request[Any, Any, Any]) -> str:
    """Where a browser goes once it has signed in: the page it asked for, or, for a form it sent (a session that
    ended while the form was open: the change was not made), the page the form was on; a form's own address
    answers POST only."""
    if request.method in ("GET", "HEAD"):
        return request.url.path + (f"?{request.url.query}" if request.url.query else "")
    referer = urlsplit(request.headers.get("referer", ""))
    same_site = referer.netloc in ("", request.url.netloc)
    return (referer.path + (f"?{referer.query}" if referer.query else "")) if same_site and referer.path else "/"


def console_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Every console error's answer, with the security headers every console page carries."""
    return secured(_error_answer(request, exc))


def _profile_page(path: str) -> str | None:
    """The page of the profile a refused form or page was about (its address as the browser sent it), if any."""
    parts = path.split("/")  # (decoded once, as the router read it: quoted again, it names the same profile)
    if len(parts) > 3 and parts[1] == "profiles" and parts[2]:
        return "/profiles/" + quote(parts[2], safe="")
    return None


def _error_answer(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    answer = handle_exception(request, exc)
    if not wants_html(request):
        return answer
    if isinstance(exc, AuthenticationError):
        login = f"/login?next={quote(_back_after_login(request), safe='')}"
        if request.cookies.get(TOKEN_COOKIE):  # signed in until now: its token was revoked or has expired
            login += "&ended=1"
        if is_htmx(request):
            return Response(b"", status_code=401, headers={"HX-Redirect": login})
        return see_other(login)
    body = answer.content  # the API's error shape, as a dict: {"error": code, "detail": message, ...}
    shown = page(
        request,
        "error.html.j2",
        answer.status_code,
        status=answer.status_code,
        error=body["error"],
        detail=body["detail"],
        profile_page=_profile_page(request.url.path),
    )
    shown.headers.update({key: value for key, value in (answer.headers or {}).items() if key.lower() == "retry-after"})
    return shown
