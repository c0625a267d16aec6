"""Templates: where they live, the filters they use, and the context every page gets."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio.to_thread
from jinja2 import Environment
from litestar import Request, Response
from litestar.exceptions import ValidationException
from litestar.datastructures import ResponseHeader
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template.config import TemplateConfig

from ledger.api.errors import handle_exception, status_for
from ledger.console.session import viewer_of
from ledger.console.views import format_labels, number
from ledger.errors import LedgerError
from ledger.values import NAME_MAX

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

# Every console answer, error pages included: never framed by another site (clickjacking), scripts and everything
# else from this server only (htmx adds inline styles), the content type as sent, and no address sent to other
# sites. The console's router sets them on what its handlers return; an error's answer is built by the exception
# handler instead, which Litestar does not give the router's headers, so ``console_error`` adds them itself.
def security_headers(*, inline_scripts: bool = False) -> list[ResponseHeader]:
    """The headers of :data:`SECURITY_HEADERS`; ``inline_scripts``: for a page whose own script is written into it
    (the API's documentation page, whose start-up script Litestar writes)."""
    scripts = "script-src 'self' 'unsafe-inline'; " if inline_scripts else ""
    return [
        ResponseHeader(name="Content-Security-Policy", value=(
            f"default-src 'self'; {scripts}style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")),
        ResponseHeader(name="X-Frame-Options", value="DENY"),
        ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
        ResponseHeader(name="Referrer-Policy", value="same-origin"),
        ResponseHeader(name="Cache-Control", value="no-store"),  # a page signed out of is not one Back press away
    ]


SECURITY_HEADERS = security_headers()


def secured(response: Response[Any]) -> Response[Any]:
    """``response`` with the console's :data:`SECURITY_HEADERS`."""
    response.headers.update({header.name: header.value for header in SECURITY_HEADERS})
    return response


def as_json(value: Any) -> str:
    """A value as the API's JSON writes it (its keys in their order, its text as written; escaped as any text)."""
    return json.dumps(value, ensure_ascii=False)


def when(moment: datetime | None) -> str:
    """A time as the console shows it: UTC, to the second."""
    if moment is None:
        return "—"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def short(digest: str | None, length: int = 12) -> str:
    return (digest or "")[:length] or "—"


def query(params: dict[str, Any], **changes: Any) -> str:
    """A query string of ``params`` with ``changes`` applied; empty values are left out."""
    merged = {**params, **changes}
    return urlencode({key: value for key, value in merged.items() if value not in (None, "", False)}, doseq=True)


def _configure(engine: JinjaTemplateEngine) -> None:
    environment: Environment = engine.engine
    environment.filters.update(when=when, short=short, number=number, json=as_json)
    environment.globals.update(query=query, format_labels=format_labels, NAME_MAX=NAME_MAX)
    environment.trim_blocks = environment.lstrip_blocks = True


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=_configure)


def page(request: Request[Any, Any, Any], name: str, status_code: int = 200, **context: Any) -> Template:
    """A console page: the template ``name`` with who is looking and the server's mode."""
    runtime = request.app.state.runtime
    return Template(
        template_name=name,
        context={"viewer": viewer_of(request), "auth": runtime.auth, "path": request.url.path, **context},
        status_code=status_code,
    )


FIXED_BY_TYPING_AGAIN = frozenset({409, 422})
"""A form's refusals whose sender can fix them by changing what was typed: a value refused, a name taken. (Not a
profile changed since its page was shown, 412: its edit form, kept, would put back what the change changed.)"""


@dataclass(frozen=True)
class Problem:
    """Why a form was refused, as the API would answer it (shown above the form, which keeps what was typed)."""

    status: int
    error: str
    detail: str


async def form_again(request: Request[Any, Any, Any], error: Exception, render: Callable[[Problem], Template],
                     fixable: frozenset[int] = FIXED_BY_TYPING_AGAIN) -> Template:
    """The form's own page again, holding what was typed and saying why it was refused (``render``, run in a worker
    thread), for a refusal typing again fixes; any other error is raised on, to the error page. (A browser going
    Back from an error page re-fetched the form empty: no console page is kept by the browser.)"""
    status = 422 if isinstance(error, ValidationException) else status_for(error) if isinstance(error, LedgerError) \
        else None
    if status not in fixable or is_htmx(request) or not wants_html(request):
        raise error  # (a client that does not ask for a page gets the API's JSON error)
    answer = handle_exception(request, error)  # the one mapping of errors to statuses and words
    body = answer.content
    return await anyio.to_thread.run_sync(render, Problem(answer.status_code, body["error"], body["detail"]))


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true"


def wants_html(request: Request[Any, Any, Any]) -> bool:
    return is_htmx(request) or "text/html" in request.headers.get("accept", "")


def fragment_or_page(request: Request[Any, Any, Any], fragment: str, whole: str, **context: Any) -> Template:
    """The template ``fragment`` alone when htmx asks (it swaps it into the page), else the page ``whole``."""
    if is_htmx(request):
        return Template(template_name=fragment, context=context)
    return page(request, whole, **context)


def render_fragment(request: Request[Any, Any, Any], name: str, **context: Any) -> str:
    """A template rendered to text (for Server-Sent Events, which carry HTML fragments)."""
    engine = request.app.template_engine
    return engine.get_template(name).render(request=request, **context)
