"""Strict request bodies, headers that take one value given once, no changes from other sites, no requests addressed
to unknown host names.

Litestar converts a JSON body to the handler's Struct leniently (``"3"`` would become ``3``). This hook, run
before every handler, decodes the body again with msgspec's strict rules against the handler's ``data``
type, so a value of the wrong JSON type is refused (422 ``invalid_request``) rather than coerced; malformed JSON
is refused (422) here too, and so is JSON nested too deeply to decode, and a body that is not
``application/json`` (415). A value outside the bounds its field declares (``Meta``) breaks a rule of the
domain: 422 ``invalid_value``, as the domain's own checks answer.

A page of another site can still reach a server through a name of its own that it points at the server's
address (DNS rebinding): its requests are then same-site, ``Origin`` and ``Host`` alike. The ``Host`` check
refuses names the server was not told to answer to (in open mode every name but ``localhost``).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import msgspec
from litestar import Request
from litestar.exceptions import ValidationException
from litestar.types import ASGIApp, Receive, Scope, Send

from ledger.api.auth import SAFE_METHODS
from ledger.api.errors import (
    CrossSiteRequestError,
    InvalidRequestError,
    UnknownHostError,
    UnsupportedMediaTypeError,
    for_openai_clients,
    openai_path,
    status_for,
)
from ledger import strict_json
from ledger.errors import ValidationError

_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_BOUND = re.compile(r"^Expected `[^`]*` (of length )?[<>]")


def refuse_cross_site(request: Request[Any, Any, Any]) -> None:
    """A change (any method but GET, HEAD, OPTIONS) whose ``Origin`` is another site's is refused: browsers name
    the page that sent a request there, and a page elsewhere must not act through a browser on this server (in
    open mode nothing else would stop it; with tokens, the console's cookie has its CSRF check besides)."""
    origin = request.headers.get("origin")
    if origin is None or request.method in SAFE_METHODS:
        return
    hosts = {request.headers.get(name, "").lower() for name in ("host", "x-forwarded-host")} - {""}
    if urlsplit(origin).netloc.lower() not in hosts:
        raise CrossSiteRequestError(f"a change sent by a page of another site ({origin[:100]}) is refused")


ONE_VALUE_HEADERS = {name.lower().encode(): name for name in (
    "If-Match", "Idempotency-Key", "X-Actor", "X-Reason", "Last-Event-ID")}
"""Headers a request gives once or not at all: two ``If-Match`` lines are a list (refused, as ``a, b`` is), and
two of the others would leave it to chance which one is used."""


def refuse_repeated_headers(request: Request[Any, Any, Any]) -> None:
    seen: set[bytes] = set()
    for name, _ in request.scope["headers"]:
        if name in ONE_VALUE_HEADERS:
            if name in seen:
                shown = ONE_VALUE_HEADERS[name]
                raise InvalidRequestError(f"the {shown} header is given more than once: give it once", field=shown)
            seen.add(name)


def well_formed_host(app: ASGIApp) -> ASGIApp:
    """The served app (``ledger serve`` wraps it, outside Litestar, whose error handlers run for an address no
    route has too): a ``Host`` that is not a name with an optional port (0 to 65535) is refused (400
    ``unknown_host``) before anything reads the request's address, which would fail on it (a 500 for anyone)."""

    async def checked(scope: Scope, receive: Receive, send: Send) -> None:
        http = scope["type"] == "http"
        raw = next((value for name, value in scope["headers"] if name == b"host"), b"") if http else b""
        if not _well_formed(raw):
            host = raw.decode("latin-1")
            error = UnknownHostError(f"the Host header {host[:100]!r} is not a host name with an optional port")
            status, shown = status_for(error), {"error": error.code, "detail": error.message}
            body = msgspec.json.encode(for_openai_clients(shown, status) if openai_path(scope["path"]) else shown)
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return checked


@functools.lru_cache(maxsize=64)  # every request asks: the few names a server is called by are parsed once
def _well_formed(host: bytes) -> bool:
    try:
        urlsplit(f"//{host.decode('latin-1')}").port
    except ValueError:
        return False
    return True


def refuse_unknown_host(request: Request[Any, Any, Any], allowed: frozenset[str] | None) -> None:
    """A request whose ``Host`` names neither ``localhost``, an IP address nor one of ``allowed`` (None: any) is
    refused: only a page served under such a name, pointed at this server, would send it."""
    if allowed is None:
        return
    try:
        name = urlsplit(f"//{request.headers.get('host', '')}").hostname or ""
    except ValueError:
        name = ""
    if name in allowed or name == "localhost" or name.endswith(".localhost") or _is_ip_address(name):
        return
    raise UnknownHostError(f"this server does not answer to the host name {name[:100]!r}: add it to "
                           "LEDGER_ALLOWED_HOSTS (in open mode only localhost and IP addresses are answered)")


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def media_type(header: str) -> str:
    """A ``Content-Type``'s media type; one that names a charset other than UTF-8 (JSON's, RFC 8259) is 415."""
    kind, *parameters = header.lower().split(";")
    charset = next((value.strip().strip('"') for name, _, value in (p.partition("=") for p in parameters)
                    if name.strip() == "charset"), "utf-8")
    if charset not in ("utf-8", "utf8", "us-ascii", "ascii"):  # (ASCII is UTF-8's first half)
        raise UnsupportedMediaTypeError(f"send the body in UTF-8, JSON's encoding (not charset {charset[:40]!r})")
    return kind.strip()


async def strict_json_body(request: Request[Any, Any, Any]) -> None:
    body = request.route_handler.parsed_fn_signature.parameters.get("data")
    if body is None:
        return
    raw = await request.body()
    if not raw.strip():
        return  # an absent body: the handler's signature says whether that is allowed
    content_type = media_type(request.headers.get("content-type", "application/json"))
    if content_type != "application/json" and not content_type.endswith("+json"):
        # Were it read as JSON anyway, a text/plain or form body would skip these checks, and a page of another
        # site may send one without asking first (a "simple" cross-site request).
        raise UnsupportedMediaTypeError(f"send the body as application/json (not {content_type[:80]!r})")
    try:
        msgspec.json.decode(raw, type=body.annotation)
    except msgspec.ValidationError as error:
        raise refusal(error, body.annotation) from None
    except msgspec.DecodeError as error:
        raise _body_problem("the request body is not valid JSON", f"malformed JSON: {why_malformed(error, raw)}") \
            from None
    except RecursionError:
        raise _body_problem("the request body is nested too deeply", "the JSON is nested too deeply") from None
    await refuse_repeated_keys(raw)


async def refuse_repeated_keys(raw: bytes) -> None:
    """A key given twice in one object of a (valid) JSON document is refused: JSON leaves open which one counts,
    and keeping the last would drop the other unseen. (A large body is read in a worker thread: a parse of a
    megabyte takes the event loop's tenth of a second.)"""
    if len(raw) > 64 * 1024:
        await anyio.to_thread.run_sync(_refuse_repeated_keys, raw)
    else:
        _refuse_repeated_keys(raw)


def _refuse_repeated_keys(raw: bytes) -> None:
    try:
        strict_json.loads(raw)
    except strict_json.RepeatedKeyError as repeated:  # (the answer names the field: where it is)
        raise _body_problem("a key is given twice in one object",
                            f"the key {repeated.key[:80]!r} is given twice in one object: give it once",
                            repeated.path[:200]) from None
    except (RecursionError, ValueError):  # deeper than Python's parser goes, say: msgspec's read it (no 500 for that)
        pass


_LONE_HIGH_SURROGATE = re.compile(  # (an escape: after an even number of backslashes, none escaping it)
    rb"(?<!\\)(?:\\\\)*(\\u[dD][89abAB][0-9a-fA-F]{2})(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})")


def why_malformed(error: msgspec.DecodeError, raw: bytes) -> str:
    """What is wrong with a JSON text, as msgspec says it (but for a lone high surrogate escape, ``\\ud800`` with
    no low one after it, which msgspec calls input "truncated")."""
    lone = _LONE_HIGH_SURROGATE.search(raw) if "truncated" in str(error) else None
    if lone is not None:
        return f"JSON is malformed: a lone utf-16 surrogate {lone.group(1).decode()} (byte {lone.start(1)})"
    return str(error)


def _body_problem(detail: str, message: str, key: str = "data") -> ValidationException:
    """A body Litestar's validation would refuse (422 ``invalid_request``): ``message`` about the field ``key``."""
    return ValidationException(detail=detail, extra=[{"message": message, "key": key, "source": "body"}])


def refusal(error: msgspec.ValidationError, body: Any = None) -> Exception:
    """The error to answer for a body msgspec refused: a value out of its declared bounds is ``invalid_value``,
    anything else (a wrong type, an unknown or missing field) ``invalid_request``; both name the field. A value a
    field of ``body`` (the body's type) does not take among its few says which it takes."""
    message = str(error)
    match = _PATH.search(message)
    key = (match.group("path") if match else "") or "data"
    message = _PATH.sub("", message)
    if message.startswith("Invalid enum value") and (taken := _values_taken(body, key)):
        message = f"this server takes only {taken} here"
    if _BOUND.match(message):
        return ValidationError(f"{key}: {message}", field=key)
    return _body_problem("the request body is invalid", message, key)


def _values_taken(body: Any, key: str) -> str | None:
    """The values a top-level field of the Struct ``body`` declared as a ``Literal`` takes, as JSON (``1 or null``);
    None for any other field."""
    if body is None or not isinstance(info := msgspec.inspect.type_info(body), msgspec.inspect.StructType):
        return None
    field = next((field for field in info.fields if field.encode_name == key), None)
    if field is None:
        return None
    kinds = field.type.types if isinstance(field.type, msgspec.inspect.UnionType) else (field.type,)
    values = [msgspec.json.encode(value).decode() for kind in kinds
              if isinstance(kind, msgspec.inspect.LiteralType) for value in kind.values]
    if not values:
        return None
    return " or ".join(values + ["null"] * any(isinstance(kind, msgspec.inspect.NoneType) for kind in kinds))

