"""``Idempotency-Key`` on every command (POST, PUT, PATCH, DELETE): a retry with the same key gets the first answer
again and appends nothing.

* :func:`idempotent_command` (a ``before_request`` hook, after authentication): for a request with a key, an
  answer kept for the same actor and key is replayed (same status, headers and body, plus
  ``Idempotent-Replayed: true``) when the request is the same (method, path, query, body) and refused with 422
  ``idempotency_key_reused`` when it is not; a key recorded in the log without a kept answer (the first request is
  still running, or its answer was lost, e.g. to a database stop after the commit, or it held a secret that is
  shown once) answers 409 ``idempotency_key_in_use``. Otherwise the command runs with the key pending: its first
  save records the claim atomically with its events (:mod:`ledger.idempotency`).
* :func:`idempotency_middleware` keeps the answer of a command whose claim was recorded, for the retries.

Keys are scoped to the actor (the token's name; ``X-Actor`` in open mode) and kept for 24 hours; the claims in
the log are kept for ever, so a key is never run twice.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import anyio.to_thread
from litestar import Litestar, Request, Response
from litestar.enums import ParamType
from litestar.openapi.spec import OpenAPIType, Parameter, Schema
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ledger.api.auth import principal_of
from ledger.idempotency import (
    Answer,
    Answers,
    Claim,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    check_key,
    claim_id,
    fingerprint,
    pending_claim,
    recorded,
)

log = logging.getLogger("ledger.api")

HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
COMMAND_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SCOPE_KEY = "ledger.idempotency"
ANSWER_MAX_BYTES = 1024 * 1024
_NOT_REPLAYED = {b"content-length", b"date", b"server", b"x-request-id", b"transfer-encoding", b"connection"}
_answers: weakref.WeakKeyDictionary[Any, Answers] = weakref.WeakKeyDictionary()


def answers_of(ledger: Any) -> Answers:
    store = _answers.get(ledger)
    if store is None:
        store = _answers[ledger] = Answers(getattr(ledger.recorder, "datastore", None))
    return store


def _actor(request: Request[Any, Any, Any]) -> str:
    principal = principal_of(request)
    if principal is not None:
        return principal.name
    return (request.headers.get("x-actor") or "").strip() or "anonymous"


async def idempotent_command(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """Replay or refuse a retried command, or let it run with its key pending (see the module's docstring)."""
    if request.method not in COMMAND_METHODS:
        return None
    key = request.headers.get(HEADER)
    if key is None:
        return None
    check_key(key.strip())
    services = request.app.state.services
    ledger = services.ledger
    identity = claim_id(_actor(request), key.strip())
    body = await request.body()
    request_print = fingerprint(request.method, request.url.path, request.scope.get("query_string", b""), body)
    store = answers_of(ledger)
    kept = await anyio.to_thread.run_sync(store.get, identity)
    if kept is not None:
        if kept.fingerprint != request_print:
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key was used for a different request; use a new key", field="Idempotency-Key"
            )
        headers = {name: value for name, value in kept.headers}
        headers[REPLAYED_HEADER] = "true"
        return Response(kept.body, status_code=kept.status, headers=headers, media_type=headers.get("content-type"))
    claimed = await anyio.to_thread.run_sync(recorded, ledger, identity)
    if claimed is not None:
        if claimed.fingerprint != request_print:
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key was used for a different request; use a new key", field="Idempotency-Key"
            )
        raise IdempotencyKeyInUseError(
            "a request with this Idempotency-Key was recorded at "
            f"{claimed.created_on.isoformat()}; its answer is not available (it may still be running: retry in a "
            "moment; an answer that held a secret, or that is older than a day, is not kept)",
            recorded_at=claimed.created_on.isoformat(),
        )
    claim = Claim(id=identity, fingerprint=request_print, method=request.method, path=request.url.path)
    request.scope[SCOPE_KEY] = claim  # type: ignore[literal-required]
    pending_claim.set(claim)  # seen by the handler, in this task and the threads it runs in
    return None


def idempotency_middleware(app: ASGIApp) -> ASGIApp:
    """Keeps the answer of every command whose Idempotency-Key was recorded with its events."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in COMMAND_METHODS:
            await app(scope, receive, send)
            return
        status, headers, chunks, size = 0, [], [], 0

        async def capture(message: Message) -> None:
            nonlocal status, headers, size
            if message["type"] == "http.response.start":
                status, headers = message["status"], list(message.get("headers", ()))
            elif message["type"] == "http.response.body" and size <= ANSWER_MAX_BYTES:
                chunk = message.get("body", b"")
                size += len(chunk)
                chunks.append(chunk)
            await send(message)

        await app(scope, receive, capture)
        claim: Claim | None = scope.get(SCOPE_KEY)  # type: ignore[assignment]
        if claim is None or not claim.saved or size > ANSWER_MAX_BYTES:
            return
        pairs = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers
                 if name.lower() not in _NOT_REPLAYED]
        if any(name.lower() == "cache-control" and "no-store" in value for name, value in pairs):
            return  # e.g. a new token's secret: shown once, never kept
        answer = Answer(fingerprint=claim.fingerprint, status=status, headers=pairs, body=b"".join(chunks))
        ledger = scope["app"].state.services.ledger  # type: ignore[index]
        try:
            await anyio.to_thread.run_sync(answers_of(ledger).put, claim.id, answer)
        except Exception as error:  # noqa: BLE001 - the answer was sent; a retry then gets 409, not a replay
            log.warning("the answer to an idempotent command could not be kept: %s", error)

    return wrapped


def document_idempotency_key(app: Litestar) -> None:
    """Every command's operation in the OpenAPI document takes the ``Idempotency-Key`` header (an on_startup hook)."""
    for path_item in (app.openapi_schema.paths or {}).values():
        for method in COMMAND_METHODS:
            operation = getattr(path_item, method.lower(), None)
            if operation is None:
                continue
            parameters = list(operation.parameters or [])
            if any(getattr(p, "name", "").lower() == HEADER for p in parameters):
                continue
            parameters.append(
                Parameter(
                    name="Idempotency-Key",
                    param_in=ParamType.HEADER,
                    required=False,
                    description="Retry-safe: a retry with the same key and request gets the first answer again and "
                    "records nothing; the same key for another request is 422 `idempotency_key_reused`.",
                    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255),
                )
            )
            operation.parameters = parameters
