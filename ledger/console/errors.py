"""Errors on console routes: the API's one mapping decides the status and the words; the console shows them as
a page (or, for a request that needs a session, sends the browser to the sign-in form)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec
from litestar import Request, Response
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from ledger.api.errors import handle_exception
from ledger.console.session import LoginRequiredError, viewer_of


def console_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, LoginRequiredError):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        login = f"/login?next={quote(target, safe='')}"
        if request.headers.get("hx-request") == "true":
            return Response(b"", status_code=401, headers={"HX-Redirect": login})
        return Redirect(login, status_code=HTTP_303_SEE_OTHER)
    answer = handle_exception(request, exc)
    body = answer.content if isinstance(answer.content, dict) else msgspec.json.decode(answer.content or b"{}")
    return Template(
        template_name="error.html.j2",
        context={
            "viewer": viewer_of(request),
            "auth": request.app.state.services.auth,
            "path": request.url.path,
            "status": answer.status_code,
            "error": body.get("error", "error"),
            "detail": body.get("detail", ""),
        },
        status_code=answer.status_code,
        headers={key: value for key, value in (answer.headers or {}).items() if key.lower() == "retry-after"},
    )
