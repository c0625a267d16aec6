"""The one place where errors become HTTP responses.

Every error answer has the shape ``{"error": "<code>", "detail": "<human message>", ...context}``; under ``/v1``
OpenAI's, which its clients read: ``{"error": {"message": detail, "type", "param": field, "code", ...context}}``.

* ledger errors: 401 no valid bearer token (with ``WWW-Authenticate: Bearer``), 403 a role too low, 404 not found, 409 conflicts, 412 stale ``If-Match``, 422 invalid values,
  429 (with ``Retry-After``) what runs one at a time is running (a walk of the log);
* the API's own: 400 ``unknown_host`` for a request addressed to a host name the server does not answer to
  (``LEDGER_ALLOWED_HOSTS``), 403 ``cross_site_request`` for a change sent by a page of another site, 415 a body
  that is not JSON where JSON is read, 504 when the projections did not reach a requested position in time;
* Litestar's: request validation (body, query, path, headers, malformed JSON) and a path parameter that is not of
  its type (``{execution_id:uuid}``) → 422 ``invalid_request``;
  an oversized body → 413; an unknown route → 404; a wrong method → 405; anything else it raises keeps
  its status with the same shape;
* the database unreachable (connection refused or lost, the pool exhausted past its short timeout) → 503
  ``database_unavailable`` with ``Retry-After``; the pool reconnects by itself once the database is back;
* anything unexpected → 500 ``internal_error`` with no traceback in the body (it is logged).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from dataclasses import replace
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import ParameterKwarg
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_405_METHOD_NOT_ALLOWED,
    HTTP_409_CONFLICT,
    HTTP_412_PRECONDITION_FAILED,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
    HTTP_504_GATEWAY_TIMEOUT,
)

from ledger.api.schemas import ErrorBody, OpenAIErrorBody
from ledger.errors import (
    AuthenticationError,
    BusyError,
    ConflictError,
    LedgerError,
    NotFoundError,
    PermissionDeniedError,
    StaleVersionError,
    ValidationError,
)
from ledger.outages import (
    DatabaseFileGone, is_database_unavailable, out_of_space, pool_exhausted, raised_from, refuses_writes,
    waited_for_a_connection,
)
from ledger.write_path import WriteTimeoutError
from projections.errors import ReadTimeoutError

log = logging.getLogger("ledger.api")


class ApiError(LedgerError):
    """An error raised by the HTTP layer itself."""

    code = "api_error"


class InvalidRequestError(ValidationError):
    """A request the API cannot read: a bad id, cursor, time or header."""

    code = "invalid_request"


class ServiceUnavailableError(ApiError):
    """Something this request needs is not available in this process (e.g. no model is loaded)."""

    code = "service_unavailable"


class UnsupportedMediaTypeError(ApiError):
    """A body in another format than the route reads."""

    code = "unsupported_media_type"


class CrossSiteRequestError(PermissionDeniedError):
    """A change sent by a page of another site (its ``Origin``): never one this server's clients make."""

    code = "cross_site_request"


class UnknownHostError(ApiError):
    """A request addressed to a host name this server is not configured to answer to (``LEDGER_ALLOWED_HOSTS``)."""

    code = "unknown_host"


class ClientClosedRequestError(ApiError):
    """The client went away before its answer was ready; the work it asked for was given up (nothing recorded).
    Answered 499, as nginx logs such a request: nobody reads it, and it is no failure of the server."""

    code = "client_closed_request"


class EngineBusyError(ServiceUnavailableError):
    """The generation queue is full; the request was refused before it ran (nothing is recorded)."""

    code = "engine_busy"

    def __init__(self, message: str, retry_after_s: int, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.retry_after_s = retry_after_s


class ShuttingDownError(ServiceUnavailableError):
    """The server is shutting down: a generation waiting for a place was refused (nothing ran or was recorded), or
    one running was cut short (what it had generated is recorded as ``partial``); another server can take it."""

    code = "shutting_down"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, retry_after_s=1, **details)
        self.retry_after_s = 1


class ProjectionTimeoutError(ApiError):
    """The read side did not reach the position the client asked to read after."""

    code = "projection_timeout"


_STATUSES: tuple[tuple[type[LedgerError], int], ...] = (  # the first kind the error is decides
    (AuthenticationError, HTTP_401_UNAUTHORIZED),
    (PermissionDeniedError, HTTP_403_FORBIDDEN),
    (StaleVersionError, HTTP_412_PRECONDITION_FAILED),
    (NotFoundError, HTTP_404_NOT_FOUND),
    (ConflictError, HTTP_409_CONFLICT),
    (ValidationError, HTTP_422_UNPROCESSABLE_ENTITY),
    (UnsupportedMediaTypeError, HTTP_415_UNSUPPORTED_MEDIA_TYPE),
    (UnknownHostError, HTTP_400_BAD_REQUEST),
    (ProjectionTimeoutError, HTTP_504_GATEWAY_TIMEOUT),
    (ClientClosedRequestError, 499),
    (ServiceUnavailableError, HTTP_503_SERVICE_UNAVAILABLE),
    (ReadTimeoutError, HTTP_503_SERVICE_UNAVAILABLE),
    (BusyError, HTTP_429_TOO_MANY_REQUESTS),
)


def status_for(error: LedgerError) -> int:
    return next((status for kind, status in _STATUSES if isinstance(error, kind)), HTTP_500_INTERNAL_SERVER_ERROR)


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None, **context: Any) -> Response:
    extra = {key: value for key, value in context.items() if value is not None and key not in ("error", "detail")}
    body = msgspec.to_builtins({"error": code, "detail": detail, **extra}, enc_hook=str, str_keys=True)
    return Response(body, status_code=status, headers=headers)


RETRY_AFTER = {"Retry-After": "1"}
PASSING_REFUSAL = "ledger.passing_refusal"
"""The scope key saying the answer is a refusal a retry may not get (:attr:`ledger.errors.LedgerError.passing`)."""


def _write_timeout(exc: BaseException) -> WriteTimeoutError | None:
    """The write timeout the error is, or was raised from (nothing was recorded)."""
    return next((error for error in raised_from(exc, implicitly=True) if isinstance(error, WriteTimeoutError)), None)


_HTTP_CODES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    422: "invalid_request",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}


_MISSING_BODY = "this request needs a JSON body"  # what Litestar words as the name of its missing key, 'data'


def _field_of(request: Request[Any, Any, Any], key: str | None) -> str | None:
    """The field as the client named it: a body path, or a parameter's name on the wire (``from``,
    ``X-Min-Position``) rather than the Python name of the handler's or a dependency's argument."""
    if not key or key == "data":
        return None
    handler = request.scope.get("route_handler")
    if handler is not None:
        providers = handler.resolve_dependencies().values()
        for signature in (handler.parsed_fn_signature, *(provider.parsed_fn_signature for provider in providers)):
            parameter = signature.parameters.get(key)
            if parameter is not None and isinstance(parameter.kwarg_definition, ParameterKwarg):
                return parameter.kwarg_definition.name or key
    return key.removeprefix("$.").removeprefix("data.")


_MISSING = re.compile(r"^Object (?:missing required|contains unknown) field `([^`]+)`(?: - at `\$\.([^`]+)`)?$")


def _field_in_message(message: Any) -> str | None:
    """The field a body left out or has no place for, named in msgspec's message (``… field `name` - at `$.a` ``:
    ``a.name``)."""
    found = _MISSING.match(message) if isinstance(message, str) else None
    if found is None:
        return None
    field, within = found.groups()
    return f"{within}.{field}" if within else field


def _field_at(request: Request[Any, Any, Any], item: dict[str, Any]) -> str | None:
    """The field at fault: where msgspec says (``messages[0]``), and in it the field its message names, left out or
    unknown (``messages[0].role``)."""
    at, named = _field_of(request, item.get("key")), _field_in_message(item.get("message"))
    return f"{at}.{named}" if at and named else at or named


def openai_path(path: str) -> bool:
    """Whether a path is the OpenAI-compatible API's (``/v1`` and under it), whose errors come in OpenAI's shape."""
    return path == "/v1" or path.startswith("/v1/")


def allow_header(methods: Iterable[str]) -> str:
    """An ``Allow`` header naming ``methods``, and HEAD wherever GET is (``ledger serve`` answers HEAD as GET)."""
    named = set(methods)
    return ", ".join(sorted(named | {"HEAD"} if "GET" in named else named))


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response:
    """The one exception handler of the app: the ledger's error shape, or under ``/v1`` OpenAI's."""
    response = _answer(request, exc)
    if openai_path(request.url.path):
        response.content = for_openai_clients(response.content, response.status_code)
        response.status_code = OPENAI_STATUS.get(response.status_code, response.status_code)
    return response


def for_openai_clients(body: dict[str, Any], status: int) -> dict[str, Any]:
    context = {key: value for key, value in body.items() if key not in ("error", "detail", "field")}
    kind = "authentication_error" if status == 401 else "server_error" if status >= 500 else "invalid_request_error"
    param = body.get("field") or _PARAMS.get(body["error"])
    return {"error": {"message": body["detail"], "type": kind, "param": param, "code": body["error"], **context}}


OPENAI_STATUS = {HTTP_422_UNPROCESSABLE_ENTITY: HTTP_400_BAD_REQUEST}
"""OpenAI answers every invalid request 400 (its clients raise ``BadRequestError``); the rest of the API, 422."""
_PARAMS = {  # the /v1 fields
    "profile_not_found": "profile", "profile_version_not_found": "profile_version", "profile_incompatible": "profile",
}


def _from_the_scheduler(exc: Exception) -> Exception:
    """The generation scheduler's refusals as ledger errors: a full queue is 503 ``engine_busy`` with
    ``Retry-After``; a generation given up because its client went away, 499 (nobody reads it: counted, not logged
    as a failure); one refused or cut short because the server is shutting down, 503 ``shutting_down``. Only once
    the scheduler was loaded: the API imports no model code until a model is."""
    scheduler = sys.modules.get("steering.scheduler")
    if scheduler is not None and isinstance(exc, scheduler.SchedulerFullError):
        return EngineBusyError(str(exc), exc.retry_after_s)
    if scheduler is not None and isinstance(exc, scheduler.CutShortError) and exc.execution_id is not None:
        return ShuttingDownError(f"{exc}; what it had generated is recorded as execution {exc.execution_id} "
                                 "(partial)", execution_id=str(exc.execution_id))
    if scheduler is not None and isinstance(exc, (scheduler.EngineClosedError, scheduler.CutShortError)):
        return ShuttingDownError(str(exc))
    if scheduler is not None and isinstance(exc, scheduler.RequestCancelledError):
        return ClientClosedRequestError(str(exc))
    return exc


_PATH_KINDS = {UUID: "a UUID", int: "an integer"}


def _unparsed_path_parameter(request: Request[Any, Any, Any]) -> tuple[str, str, str]:
    """The typed path parameter of the request's route that its path does not give as that type: its name, what
    it must be, and what was given."""
    segments = [""] + [segment for segment in request.url.path.split("/") if segment]  # as the router reads it
    for route in request.app.routes:
        template = route.path_format.split("/")
        given = {part[1:-1]: segment for part, segment in zip(template, segments) if part.startswith("{")}
        if len(template) != len(segments) or any(part != segment for part, segment in zip(template, segments)
                                                 if not part.startswith("{")):
            continue
        for name, value in given.items():
            definition = route.path_parameters[name]
            try:
                if definition.parser is not None:
                    definition.parser(value)
            except ValueError:
                return name, _PATH_KINDS.get(definition.type, definition.type.__name__), value
    return "path", "a path this API serves", request.url.path


def _answer(request: Request[Any, Any, Any], exc: Exception) -> Response:
    exc = _from_the_scheduler(exc)
    if isinstance(exc, LedgerError):
        status = status_for(exc)
        request.scope[PASSING_REFUSAL] = exc.passing  # type: ignore[literal-required]
        if status >= 500:  # a 503 is load shed or a database away, not a fault: a warning
            log.log(logging.WARNING if status == 503 else logging.ERROR, "ledger error %s on %s %s: %s", exc.code,
                    request.method, request.url.path, exc.message)
        headers = {"WWW-Authenticate": 'Bearer realm="ledger"'} if status == HTTP_401_UNAUTHORIZED else None
        retry_after = getattr(exc, "retry_after_s", None)
        if retry_after is not None:
            headers = {**(headers or {}), "Retry-After": str(retry_after)}
        return error_response(status, exc.code, exc.message, headers=headers, **exc.details)
    if isinstance(exc, ValidationException):
        extra = exc.extra if isinstance(exc.extra, list) else []
        problems = [
            {"field": _field_at(request, item),
             "source": item.get("source"),
             "message": _MISSING_BODY if item.get("message") == "'data'" else item.get("message")}
            for item in extra
            if isinstance(item, dict)
        ]
        if problems:
            first = problems[0]
            where = first["field"] or first["source"] or "request"
            detail = f"{where}: {first['message']}"
            return error_response(
                HTTP_422_UNPROCESSABLE_ENTITY, "invalid_request", detail, field=first["field"], errors=problems
            )
        detail = exc.detail or "the request could not be read"
        return error_response(HTTP_422_UNPROCESSABLE_ENTITY, "invalid_request", detail)
    cause = exc.__cause__
    if isinstance(exc, NotFoundException) and isinstance(cause, ValueError) and not isinstance(cause, HTTPException):
        # the router found the route but could not parse a path parameter as its type
        name, kind, given = _unparsed_path_parameter(request)
        return error_response(HTTP_422_UNPROCESSABLE_ENTITY, "invalid_request",
                              f"{name} must be {kind} (got {given[:80]!r})", field=name)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        if status == HTTP_400_BAD_REQUEST:  # Litestar's, for a request it cannot read (a broken multipart form)
            status = HTTP_422_UNPROCESSABLE_ENTITY
        code = _HTTP_CODES.get(status, "http_error")
        too_large = "the request body is larger than this server accepts"
        detail = too_large if status == 413 else exc.detail or code.replace("_", " ")
        headers = exc.headers
        if status == HTTP_405_METHOD_NOT_ALLOWED and headers and "allow" in headers:  # (Litestar names it so)
            headers = {"Allow": allow_header(headers["allow"].split(", "))}
        return error_response(status, code, detail, headers=headers)
    timeout = _write_timeout(exc)
    if timeout is not None:
        log.warning("write timed out on %s %s: %s", request.method, request.url.path, timeout)
        return error_response(HTTP_503_SERVICE_UNAVAILABLE, "write_timeout", str(timeout), headers=RETRY_AFTER)
    if waited_for_a_connection(exc) and pool_exhausted(request.app.state.runtime.ledger.recorder.datastore):
        log.warning("every database connection in use on %s %s", request.method, request.url.path)
        return error_response(HTTP_503_SERVICE_UNAVAILABLE, "server_busy", "every database connection of this "
                              "server is in use; retry shortly", headers=RETRY_AFTER)
    if out_of_space(exc):  # (503 as an outage: a retry once space is freed succeeds)
        log.error("the database has no room to write on %s %s: %s", request.method, request.url.path, exc)
        request.app.state.runtime.out_of_space_at = time.monotonic()
        detail = "the database has no room to write (its disk is full); retry once space is freed"
        return error_response(HTTP_503_SERVICE_UNAVAILABLE, "database_unavailable", detail, headers=RETRY_AFTER)
    if refuses_writes(exc):  # a failover left a standby, say (503 as an outage: a retry once it takes writes)
        log.error("the database takes no writes on %s %s: %s", request.method, request.url.path, exc)
        detail = "the database takes no writes right now (it is read-only); retry once it takes them"
        return error_response(HTTP_503_SERVICE_UNAVAILABLE, "database_unavailable", detail, headers=RETRY_AFTER)
    gone = next((error for error in raised_from(exc) if isinstance(error, DatabaseFileGone)), None)
    if gone is not None:  # (no retry helps: only a restart opens the file the path names now)
        log.error("%s (%s %s)", gone, request.method, request.url.path)
        return error_response(HTTP_503_SERVICE_UNAVAILABLE, "database_unavailable", str(gone))
    if is_database_unavailable(exc):
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        detail = "the database cannot be reached right now; retry shortly"
        return error_response(HTTP_503_SERVICE_UNAVAILABLE, "database_unavailable", detail, headers=RETRY_AFTER)
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "an unexpected error occurred")


# -- OpenAPI documentation of the error answers ----------------------------------------------------
def error_spec(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


INVALID = {422: error_spec("The request is invalid: body, query, path or header (error `invalid_request` or a domain code)")}
NOT_FOUND = {404: error_spec("No such profile, version, execution or run")}
CONFLICT = {409: error_spec("Conflict: name taken, profile active, or a concurrent update")}
STALE = {412: error_spec("If-Match names a version that is no longer current; `current_version` says which is (not "
                         "given for an empty or malformed tag, or another profile's)")}
TIMEOUT = {504: error_spec("The read side did not reach `min_position` in time (error `projection_timeout`)")}
UNAVAILABLE = {503: error_spec("The database cannot be reached, or takes no writes, right now (error "
                               "`database_unavailable`); retry shortly")}
TOO_LARGE = {413: error_spec("The request body is larger than the configured maximum")}
BUSY = {429: error_spec("What runs one at a time is running (a walk of the log): retry after `Retry-After` seconds")}


def responses(*groups: dict[int, ResponseSpec], openai: bool = False) -> dict[int, ResponseSpec]:
    """The error answers of a route; ``openai``: in OpenAI's shape (the routes under ``/v1``)."""
    if not openai:
        return {status: spec for group in groups for status, spec in group.items()}
    return {OPENAI_STATUS.get(status, status): replace(spec, data_container=OpenAIErrorBody)
            for group in groups for status, spec in group.items()}
