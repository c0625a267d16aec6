"""Make the generated OpenAPI document say what the API does.

* Litestar documents a ``400`` for every handler with parameters; this API answers request validation errors
  with ``422`` and the common error shape, so the ``400`` entries are replaced by that ``422`` (not under ``/v1``,
  which answers them ``400`` in OpenAI's shape).
* Every operation that may touch the database documents ``503 database_unavailable``; every command takes the
  ``Idempotency-Key`` header.
* Each API operation takes the query parameters it documents, and no other (:func:`refuse_unknown_query`).
* With authentication on, the bearer scheme is required by default; each guarded operation documents its
  ``401``/``403`` answers and the role it needs, and the public ones (``/health``, ``/ready``, ``/metrics``)
  declare that they need no token.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar
from litestar.openapi.spec import Components, OpenAPIMediaType, OpenAPIResponse, Reference, SecurityScheme
from litestar.routes import HTTPRoute

from ledger.api.auth import SAFE_METHODS, required_role
from ledger.api.errors import INVALID, openai_path
from ledger.api.idempotency import COMMAND_METHODS, HEADER, KEY_PARAMETER
from ledger.api.schemas import Request
from ledger.errors import ValidationError

ERROR_SCHEMA = "#/components/schemas/ErrorBody"
OPENAI_ERROR_SCHEMA = "#/components/schemas/OpenAIErrorBody"
BEARER = "BearerToken"
SECURITY_COMPONENTS = Components(
    security_schemes={
        BEARER: SecurityScheme(
            type="http",
            scheme="bearer",
            description="An API token (`ledger tokens create` or `POST /api/tokens`): `Authorization: Bearer pl_…`. "
            "Roles: reader (queries) < editor (changes, executions) < admin (delete, import, rebuild, tokens).",
        )
    }
)
NO_DATABASE = ("/health",)


def _error(description: str, path: str) -> OpenAPIResponse:
    """An error answer, in the shape of the path's API (OpenAI's under ``/v1``)."""
    schema = OPENAI_ERROR_SCHEMA if openai_path(path) else ERROR_SCHEMA
    return OpenAPIResponse(
        description=description, content={"application/json": OpenAPIMediaType(schema=Reference(ref=schema))}
    )


def _request_bodies_as_msgspec_reads_them(components: dict[str, Any]) -> None:
    """Litestar drops some constraints of msgspec's (a bound of 0 reads as none; an ``X | None`` under an
    outer ``Meta`` loses X's), so every request body is documented from msgspec's own JSON Schema."""
    def bodies(base: type) -> list[type]:
        return [kind for sub in base.__subclasses__() for kind in (sub, *bodies(sub))]

    _, exact = msgspec.json.schema_components(bodies(Request), ref_template="#/components/schemas/{name}")
    components.update(exact)


STREAMED = "streamed"
"""The handler ``opt`` key of the Struct each event of its ``text/event-stream`` answer carries, if it has one."""
QUERY_NAMES = "query_names"
"""The handler ``opt`` key of the query parameters an API operation takes (those its document declares), each
with whether it may be repeated (a list, such as ``tag``)."""


def refuse_unknown_query(request: Any) -> None:
    """A query parameter an API operation does not take is refused (422), as a body's unknown field is: a misspelt
    ``asof`` would else answer the present as if it were the moment asked. So is one given twice that takes one
    value (``limit=1&limit=2``): which would count is left to chance."""
    known = request.route_handler.opt.get(QUERY_NAMES)
    if known is None or not request.scope["query_string"]:
        return
    unknown = sorted(set(request.query_params) - set(known) - {"min_position"})  # any read's, a walk of the log's too
    if unknown:
        taken = f"it takes {', '.join(sorted(known))}" if known else "it takes none"
        raise ValidationError(f"unknown query parameter {unknown[0]!r}: {taken}", field=unknown[0])
    for name in known:
        if not known[name] and len(request.query_params.getall(name, ())) > 1:
            raise ValidationError(f"query parameter {name!r} is given more than once: give it once", field=name)


def refuse_unheeded_precondition(request: Any) -> None:
    """A precondition a command does not check is refused (422) rather than ignored: the change would be made
    whatever the client based it on, as if it had held. ``If-Match`` is checked by some commands; ``If-None-Match``
    by none (a create refuses a name that is taken, 409)."""
    if request.method not in COMMAND_METHODS:
        return
    if "if-none-match" in request.headers:
        raise ValidationError("no command takes If-None-Match (a create refuses a name that is taken, 409): send it "
                              "without", field="If-None-Match")
    if "if-match" in request.headers and "if_match" not in request.route_handler.parsed_fn_signature.parameters:
        raise ValidationError("this command takes no If-Match (updates, deletes, reverts and activations of a "
                              "profile do): send it without", field="If-Match")


def _a_list(schema: Any) -> bool:
    return getattr(schema, "type", None) == "array" or any(_a_list(one) for one in getattr(schema, "one_of", None) or ())


def tidy_openapi(app: Litestar) -> None:
    schema = app.openapi_schema
    _request_bodies_as_msgspec_reads_them(schema.components.schemas)
    auth = bool(app.state.runtime.auth)
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path_item = (schema.paths or {}).get(route.path_format or "/")
        if path_item is None:
            continue
        for method, (handler, _) in route.route_handler_map.items():
            operation = getattr(path_item, method.lower(), None)
            if operation is None or operation.responses is None:
                continue
            responses, path = operation.responses, route.path_format or "/"
            if "400" in responses:  # Litestar's, in its own shape
                del responses["400"]
                invalid = "400" if openai_path(path) else "422"  # /v1 answers an invalid request 400, as OpenAI does
                responses.setdefault(invalid, _error(INVALID[422].description, path))
            if route.path_format not in NO_DATABASE:
                unreachable = ("The database cannot be reached right now (`database_unavailable`), every "
                               "connection of this server to it is in use (`server_busy`), or a query ran too long "
                               "and was stopped (`read_timeout`)")
                responses.setdefault("503", _error(unreachable, path))
                if method == "GET":  # (a read's queries count against its client's share of the connections)
                    responses.setdefault("429", _error("This client's reads hold their share of the server's database "
                                                       "connections (`too_many_requests`); retry after `Retry-After` "
                                                       "seconds", path))
            body = handler.parsed_fn_signature.parameters.get("data")
            if operation.request_body is not None and body is not None and body.is_optional:
                operation.request_body.required = False  # e.g. activate: its body may be left out
            if operation.request_body is not None:
                responses.setdefault("415", _error("The body's content type is not one this operation takes "
                                                   "(error `unsupported_media_type`)", path))
            parameters = operation.parameters or []
            if path.startswith("/api/"):  # (not /v1: OpenAI's clients may add their own, as Azure's api-version)
                handler.opt[QUERY_NAMES] = {p.name: _a_list(p.schema) for p in parameters
                                            if getattr(p, "param_in", "") == "query"}
                responses.setdefault("422", _error(INVALID[422].description, path))  # an unknown query parameter
            if method in COMMAND_METHODS and not any(getattr(p, "name", "").lower() == HEADER for p in parameters):
                operation.parameters = [*parameters, KEY_PARAMETER]
            if auth:
                _document_roles(app, handler, method, operation, path)
            _document_refusals_of_any_request(method, responses, path)
            streamed = handler.opt.get(STREAMED)
            if streamed is not None:
                _, parts = msgspec.json.schema_components([streamed], ref_template="#/components/schemas/{name}")
                schema.components.schemas.update(parts)
                responses["200"].content["text/event-stream"] = OpenAPIMediaType(  # type: ignore[index, union-attr]
                    schema=Reference(ref=f"#/components/schemas/{streamed.__name__}"))


def _document_roles(app: Litestar, handler: Any, method: str, operation: Any, path: str) -> None:
    role = required_role(handler, method, app.openapi_config.path if app.openapi_config else "/schema")
    if role is None:
        operation.security = []
        return
    operation.responses.setdefault("401", _error("No valid bearer token (error `unauthenticated`)", path))
    operation.responses.setdefault("403", _error(f"The token's role is below {role} (error `forbidden`)", path))
    note = f"Requires the `{role}` role."
    operation.description = f"{operation.description}\n\n{note}" if operation.description else note


def _document_refusals_of_any_request(method: str, responses: dict[str, Any], path: str) -> None:
    """What any operation may answer, whatever it does: 400 for a Host header it does not answer to; for a change,
    403 when a page of another site sent it; for a command, 409 while another request with its Idempotency-Key
    is under way."""
    also = [("400", "The Host header is not a host name, or one this server does not answer to (`unknown_host`)")]
    if method not in SAFE_METHODS:
        also.append(("403", "A change sent by a page of another site (`cross_site_request`)"))
    if method in COMMAND_METHODS:
        also.append(("409", "A request with this Idempotency-Key is under way (`idempotency_key_in_use`): retry after "
                            "`Retry-After` for its answer"))
    for status, description in also:
        known = responses.get(status)
        if known is None:
            responses[status] = _error(description, path)
        else:
            known.description = f"{known.description}; or: {description}"
