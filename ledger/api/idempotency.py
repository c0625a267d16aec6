"""``Idempotency-Key`` on every command (POST, PUT, DELETE): a retry with the same key gets the first answer
again and appends nothing.

* :func:`idempotent_command` (a ``before_request`` hook, after authentication): for a request with a key, an
  answer kept for the same actor and key is replayed (same status, headers and body, plus
  ``Idempotent-Replayed: true``) when the request is the same (method, path, query, body) and refused with 422
  ``idempotency_key_reused`` when it is not; a key recorded in the log without a kept answer (the first request is
  still running, or its answer was lost, e.g. to a database stop after the commit, or it held a secret that is
  shown once) answers 409 ``idempotency_key_in_use``. Otherwise the command runs with the key pending: its first
  save records the claim atomically with its events (:mod:`ledger.idempotency`).
* :func:`idempotency_middleware` keeps the answer of a command whose claim was recorded, for the retries; a
  command that saved nothing (it changed nothing, or was refused for the state it found) records its key alone.

Keys are scoped to the actor (the token's name; ``X-Actor`` in open mode) and kept for 24 hours; the claims in
the log are kept for ever, so a key is never run twice.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Request, Response
from litestar.enums import ParamType
from litestar.openapi.spec import OpenAPIType, Parameter, Schema
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ledger.api.auth import principal_of
from ledger.api.errors import PASSING_REFUSAL, handle_exception
from ledger.api.observability import correlation_id
from ledger.domainmodel import CommandContext, acting_as
from ledger.errors import LedgerError
from ledger.idempotency import (
    Answer,
    Answers,
    Claim,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    check_key,
    claim_id,
    claiming,
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
KEPT_REFUSALS = frozenset({404, 409, 412})
MEANING_HEADERS = ("if-match", "prefer", "x-reason")  # a retry that changes one of them is another request
"""Refusals for the state a command found (not for the request itself), kept for its retries like a success (not
those of a moment's state: ``LedgerError.passing``)."""
STILL_RUNNING = timedelta(seconds=10)
"""A claim younger than this may still be getting its answer kept: the 409 says when to retry (``Retry-After``)."""
_NOT_REPLAYED = {b"content-length", b"date", b"server", b"x-request-id", b"transfer-encoding", b"connection"}


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
    runtime = request.app.state.runtime
    identity = claim_id(_actor(request), key.strip())
    body = _as_compared(request.headers.get("content-type", ""), await request.body())
    request_print = fingerprint(request.method, request.url.path, request.scope.get("query_string", b""), body,
                                *(f"{name}: {request.headers[name]}".encode() for name in MEANING_HEADERS
                                  if name in request.headers))
    kept = await anyio.to_thread.run_sync(runtime.answers.get, identity)
    claimed = await anyio.to_thread.run_sync(recorded, runtime.ledger, identity)
    if kept is not None and (claimed is None or claimed.fingerprint != kept.fingerprint):
        kept = None  # sealed, but not for a command this log recorded (a copy of another database's, say)
    if claimed is not None and claimed.fingerprint != request_print:
        raise IdempotencyKeyReusedError(
            "this Idempotency-Key was used for a different request; use a new key", field="Idempotency-Key"
        )
    if kept is not None:
        return _replay(kept)
    if claimed is not None:
        in_use = IdempotencyKeyInUseError(
            "a request with this Idempotency-Key was recorded at "
            f"{claimed.created_on.isoformat()}; its answer is not available (it may still be running: retry in a "
            "moment; an answer that held a secret, or that is older than a day, is not kept)",
            recorded_at=claimed.created_on.isoformat(),
        )
        if datetime.now(timezone.utc) - claimed.created_on < STILL_RUNNING:  # its answer is kept just after
            in_use.retry_after_s = 1
        raise in_use
    running = runtime.answers.running.get(identity)
    if running is not None:  # a twin with the key runs in this process: its answer is the one to give
        if running != request_print:
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key is in use by a different request; use a new key", field="Idempotency-Key")
        in_use = IdempotencyKeyInUseError("a request with this Idempotency-Key is running; retry in a moment to get "
                                          "its answer")
        in_use.retry_after_s = 1
        raise in_use
    runtime.answers.running[identity] = request_print  # until its answer is kept (idempotency_middleware)
    claim = Claim(id=identity, fingerprint=request_print, method=request.method, path=request.url.path)
    request.scope[SCOPE_KEY] = claim  # type: ignore[literal-required]
    pending_claim.set(claim)  # seen by the handler, in this task and the threads it runs in
    return None


def idempotency_middleware(app: ASGIApp) -> ASGIApp:
    """Keeps the answer of every command whose Idempotency-Key was recorded with its events.

    A keyed command's answer is held until it is complete and kept before it is sent, so a client that retries
    the moment it has it gets it again; an event stream passes through and is kept as it ends, before its last
    message (a retry gets the whole stream at once). When the command failed and meanwhile a concurrent request
    with the same key committed (its save won, so this one found the name taken, or the claim recorded), the
    answer is that request's, not this failure.
    """

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") not in COMMAND_METHODS
            or not any(name == HEADER.encode() for name, _ in scope.get("headers", ()))
        ):
            await app(scope, receive, send)
            return
        start: Message | None = None
        held: list[Message] = []
        passing = False  # an event stream, or an answer too large to hold: sent as it comes
        body = bytearray()  # the answer as sent, kept for the retries while it fits ANSWER_MAX_BYTES
        whole = True

        async def capture(message: Message) -> None:
            nonlocal start, passing, whole
            if message["type"] == "http.response.start":
                start = message
                content_type = dict(message.get("headers", ())).get(b"content-type", b"")
                if content_type.startswith(b"text/event-stream"):
                    passing = True
                    await send(message)
                return
            if message["type"] == "http.response.body":
                if whole:
                    body.extend(message.get("body", b""))
                    whole = len(body) <= ANSWER_MAX_BYTES
                if not passing:
                    held.append(message)
                    if not whole:
                        passing = True
                        for waiting in [start, *held]:
                            await send(waiting)  # type: ignore[arg-type]
                        held.clear()
                    return
                if not message.get("more_body", False) and whole:  # kept before the client sees the end (and
                    await keep(start)  # ... may retry at once)
            await send(message)

        async def keep(answer: Message | None) -> None:
            claim: Claim | None = scope.get(SCOPE_KEY)  # type: ignore[assignment]
            if answer is not None and claim is not None and claim.saved:
                answers = scope["app"].state.runtime.answers  # type: ignore[index]
                await _keep(answers, claim, answer["status"], list(answer.get("headers", ())), bytes(body))

        async def answer() -> None:
            if start is None or passing:  # a stream that ran to its end was kept whole as it ended (one too large
                return  # ... is not)
            claim: Claim | None = scope.get(SCOPE_KEY)  # type: ignore[assignment]
            runtime = scope["app"].state.runtime  # type: ignore[index]
            if claim is not None and not claim.saved:
                kept = start["status"] < 300 or start["status"] in KEPT_REFUSALS and not scope.get(PASSING_REFUSAL)
                if kept:  # it saved nothing: the key alone
                    await anyio.to_thread.run_sync(_record_alone, runtime.ledger, claim, _actor(Request(scope)),
                                                   correlation_id(scope))
            if claim is not None and not claim.saved and (start["status"] >= 400 or claim.lost):
                replaced = await _answer_of_a_concurrent_twin(runtime, claim)
                if isinstance(replaced, LedgerError):  # in the shape of every other error on this path
                    refused = handle_exception(Request(scope), replaced)
                    replaced = (refused.status_code, [*refused.headers.items(), ("content-type", "application/json")],
                                msgspec.json.encode(refused.content))
                if replaced is not None:
                    status, pairs, content = replaced
                    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in pairs]
                    headers.append((b"content-length", str(len(content)).encode()))
                    await send({"type": "http.response.start", "status": status, "headers": headers})
                    await send({"type": "http.response.body", "body": content, "more_body": False})
                    return
            await keep(start)  # before the client has the answer, and may retry at once
            await send(start)
            for message in held:
                await send(message)

        try:
            await app(scope, receive, capture)
            await answer()
        finally:
            claim: Claim | None = scope.get(SCOPE_KEY)  # type: ignore[assignment]
            if claim is not None:
                scope["app"].state.runtime.answers.running.pop(claim.id, None)  # type: ignore[index]

    return wrapped


def _record_alone(ledger: Any, claim: Claim, actor: str, correlation: str) -> None:
    """Record the key of a command that saved nothing (it changed nothing, or was refused for the state it found),
    so that a retry gets this answer, not a run against what has changed since."""
    try:
        with acting_as(CommandContext(actor=actor, correlation_id=correlation)), claiming(claim):
            ledger.save()
    except IdempotencyKeyInUseError:
        claim.lost = True  # a concurrent request with the key saved first: its answer is the one to give
    except Exception as error:  # noqa: BLE001 - the answer stands; only its replay is lost
        log.warning("the Idempotency-Key of a command that saved nothing was not recorded: %r", error)


async def _answer_of_a_concurrent_twin(
    runtime: Any, claim: Claim,
) -> tuple[int, list[tuple[str, str]], bytes] | LedgerError | None:
    """The kept answer, as status, headers and body, when another request with this key committed while this one
    failed; or the error to answer: that request was another (422), or its answer is not kept yet (409)."""
    twin = await anyio.to_thread.run_sync(recorded, runtime.ledger, claim.id)
    if twin is None:
        return None
    if twin.fingerprint != claim.fingerprint:
        return IdempotencyKeyReusedError("this Idempotency-Key was used for a different request meanwhile; use a new "
                                         "key", field="Idempotency-Key")
    for _ in range(20):  # its answer is kept just after its commit
        kept = await anyio.to_thread.run_sync(runtime.answers.get, claim.id)
        if kept is not None:
            break
        await anyio.sleep(0.05)
    if kept is None or kept.fingerprint != twin.fingerprint:  # (sealed, but not the recorded command's)
        in_use = IdempotencyKeyInUseError("a request with this Idempotency-Key was recorded meanwhile; retry in a "
                                          "moment to get its answer")
        in_use.retry_after_s = 1
        return in_use
    return kept.status, [*kept.headers, (REPLAYED_HEADER, "true")], kept.body


def _replay(kept: Answer) -> Response[Any]:
    headers = {**dict(kept.headers), REPLAYED_HEADER: "true"}
    return Response(kept.body, status_code=kept.status, headers=headers, media_type=headers.get("content-type"))


async def _keep(answers: Answers, claim: Claim, status: int, raw_headers: list[Any], body: bytes) -> None:
    pairs = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw_headers
             if name.lower() not in _NOT_REPLAYED]
    if any(name.lower() == "cache-control" and "no-store" in value for name, value in pairs):
        return  # e.g. a new token's secret: shown once, never kept
    answer = Answer(fingerprint=claim.fingerprint, status=status, headers=pairs, body=body)
    try:
        await anyio.to_thread.run_sync(answers.put, claim.id, answer)
    except Exception as error:  # noqa: BLE001 - the command stands; a retry then gets 409, not a replay
        log.warning("the answer to an idempotent command could not be kept: %s", error)


KEY_PARAMETER = Parameter(
    name="Idempotency-Key",
    param_in=ParamType.HEADER,
    required=False,
    description="Retry-safe: a retry with the same key and request gets the first answer again and "
    "records nothing; the same key for another request is 422 `idempotency_key_reused`.",
    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255),
)


def _as_compared(content_type: str, body: bytes) -> bytes:
    """A body as two tries of one request are compared: a JSON body as the value it spells (another client, proxy or
    serialiser may space it or order its keys otherwise); a multipart body with its delimiters (``--`` and the
    boundary, which no part may contain) taken out, as a client draws a new boundary for each try of an upload."""
    kind, _, parameters = content_type.partition(";")
    if kind.strip().lower() == "application/json":
        try:
            return msgspec.json.encode(msgspec.json.decode(body), order="sorted")
        except msgspec.MsgspecError:  # refused as the request it is
            return body
    if kind.strip().lower() != "multipart/form-data":
        return body
    for parameter in parameters.split(";"):
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "boundary" and value.strip('"'):
            return body.replace(b"--" + value.strip('"').encode("latin-1"), b"--")
    return body
