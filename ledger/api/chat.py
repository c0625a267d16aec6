"""OpenAI-compatible generation (``/v1``), replay of recorded generations, and the steering status."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any
from uuid import UUID, uuid4

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import Stream
from litestar.types import ASGIApp, Empty, Message, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState

from ledger.api.auth import principal_of
from ledger.api.commands import COMMAND_ROUTE, position_headers, run_command
from ledger.api.observability import ANSWERED, DEPARTED
from ledger.api.openapi import STREAMED
from ledger.api.deps import LOG_POSITION, wait_until_applied, with_reason
from ledger.api.executions import execution_found
from ledger.api.runtime import Runtime
from ledger.api.errors import (
    INVALID,
    TOO_LARGE,
    NOT_FOUND,
    TIMEOUT,
    ServiceUnavailableError,
    error_spec,
    handle_exception,
    responses,
)
from ledger.api.chat_schemas import (
    ChatChoice,
    ChatChoiceMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    ChunkDelta,
    LedgerRun,
    ModelCard,
    ModelList,
    ReplayExecution,
    ReplayRead,
    SteeringStatusRead,
    Usage,
)
from ledger.domainmodel import CommandContext
from ledger.errors import AuthenticationError, ModelNotFoundError, ValidationError
from ledger.states import convert

DEFAULT_MAX_TOKENS = 128
TOKEN_RECHECK_SECONDS = 1.0  # how often a generation asks whether its token is still live
TOKEN_LAPSED = "the token this answer was asked with was revoked or has expired: the answer was cut short"


class ModelNotLoadedError(ServiceUnavailableError):
    """This server runs without a model (``ledger serve --no-model``)."""

    code = "model_not_loaded"


BUSY_OR_UNAVAILABLE = {503: error_spec(
    "The generation queue is full, or a queued place was given to a request of an actor with fewer waiting (error "
    "`engine_busy`, with `Retry-After`; nothing was run or recorded); the server is shutting down (error "
    "`shutting_down`, with `Retry-After`); or the database cannot be reached right now (error `database_unavailable`)"
)}


def generation_of(runtime: Runtime) -> Any:
    if runtime.generation is None:
        raise ModelNotLoadedError("this server has no model loaded; start it with a model to generate")
    return runtime.generation


def wait_for_steering(runtime: Runtime, position: int) -> None:
    """Read-your-writes for steering: wait (bounded) until the hook has applied ``position``."""
    projector = runtime.steering.projector
    wait_until_applied(runtime, "the steering hook", lambda: projector.position, projector.wait_for, position)


class EitherSet:
    """Set once any of its events is (the scheduler asks ``is_set`` at each step)."""

    def __init__(self, *events: threading.Event | None) -> None:
        self.events = [event for event in events if event is not None]

    def is_set(self) -> bool:
        return any(event.is_set() for event in self.events)


@contextlib.contextmanager
def token_watch(still_allowed: Callable[[], bool] | None) -> Iterator[threading.Event]:
    """An event set once ``still_allowed`` says no (asked every :data:`TOKEN_RECHECK_SECONDS` from a thread of its
    own, so the generation's steps never wait on it) while the block runs; never set for ``None`` (open mode)."""
    lapsed, done = threading.Event(), threading.Event()

    def watch() -> None:
        while not done.wait(TOKEN_RECHECK_SECONDS):
            try:
                if not still_allowed():
                    lapsed.set()
                    return
            except Exception:  # noqa: BLE001 - the tokens could not be read now: the next check asks again
                continue

    if still_allowed is not None:
        threading.Thread(target=watch, name="token-watch", daemon=True).start()
    try:
        yield lapsed
    finally:
        done.set()


def token_check(request: Request[Any, Any, Any], runtime: Runtime) -> Callable[[], bool] | None:
    """Whether the token ``request`` was made with is still live, to ask as its answer goes on (None: open mode)."""
    principal = principal_of(request) if runtime.auth else None
    return None if principal is None else functools.partial(runtime.tokens.still_allows_here, principal)


@contextlib.contextmanager
def while_wanted(request: Request[Any, Any, Any], runtime: Runtime) -> Iterator[EitherSet]:
    """What stops a generation run for ``request``: its client gone, or its token revoked or expired meanwhile
    (checked every :data:`TOKEN_RECHECK_SECONDS`). What ran is recorded either way; a token that lapsed is then a
    401, as the next request with it would be, not the answer."""
    with token_watch(token_check(request, runtime)) as lapsed:
        try:
            yield EitherSet(request.scope.get(DEPARTED), lapsed)
        finally:
            if lapsed.is_set():  # stopped, or done meanwhile: what ran is recorded, not answered
                raise AuthenticationError(TOKEN_LAPSED)


def watch_for_departure(app: ASGIApp) -> ASGIApp:
    """Sets ``scope[DEPARTED]`` (a ``threading.Event``) when the client goes away once its request is in: a
    generation nobody waits for any more then leaves the batch (a stream's does when its iterator is closed).
    A body read before (the console's CSRF check reads the form) is in already: the watch starts at once."""

    async def watched(scope: Scope, receive: Receive, send: Send) -> None:
        departed = scope[DEPARTED] = threading.Event()  # type: ignore[literal-required]
        watcher: asyncio.Future[None] | None = None
        answered = False  # the last of the response is sent: a disconnect now is the connection's end, not a departure

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not answered:
                departed.set()

        async def receiving() -> Message:
            nonlocal watcher
            message = await receive()
            if message["type"] == "http.disconnect":
                if not answered:
                    departed.set()
            elif not message.get("more_body") and watcher is None:  # the whole body is in: watch what comes next
                watcher = asyncio.ensure_future(watch())
            return message

        async def sending(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered = True
            await send(message)

        if scope.get("method") in ("GET", "HEAD") or ScopeState.from_scope(scope).body is not Empty:
            watcher = asyncio.ensure_future(watch())  # (a stream asked for with GET has no body to wait for)
        try:
            await app(scope, receiving, sending)
        finally:
            if watcher is not None:
                watcher.cancel()

    return watched


def completion_from(data: ChatCompletionRequest) -> Any:
    from steering.runs import Completion

    for index, message in enumerate(data.messages):
        if message.content is None and message.role != "assistant":
            raise ValidationError(f"a {message.role} message needs content", field=f"messages[{index}].content")
        if "\x00" in message.text():
            raise ValidationError("message content must not contain NUL characters", field=f"messages[{index}].content")
    if None not in (data.max_tokens, data.max_completion_tokens) and data.max_tokens != data.max_completion_tokens:
        raise ValidationError(f"max_tokens ({data.max_tokens}) and max_completion_tokens ({data.max_completion_tokens})"
                              " name one bound: give one of them, or both equal", field="max_completion_tokens")
    max_tokens = next(
        (value for value in (data.max_completion_tokens, data.max_tokens) if value is not None), DEFAULT_MAX_TOKENS
    )
    stops = [data.stop] if isinstance(data.stop, str) else list(data.stop or [])
    if any("\x00" in s for s in stops):
        raise ValidationError("stop strings must not contain NUL characters", field="stop")
    return Completion(
        messages=[{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in data.messages],
        max_tokens=max_tokens,
        temperature=1.0 if data.temperature is None else data.temperature,
        top_p=1.0 if data.top_p is None else data.top_p,
        seed=data.seed,
        stop=tuple(stops),
        profile=data.profile,
        profile_version=data.profile_version,
        method=data.steering_method,
        within_context=data.max_completion_tokens is not None or data.max_tokens is not None,
    )


def fingerprint_id(fingerprint: dict[str, Any]) -> str:
    return "fp_" + hashlib.sha256(msgspec.json.encode(fingerprint, order="sorted")).hexdigest()[:12]


def ledger_run(outcome: Any, warnings: list[str]) -> LedgerRun:
    """Where a completion (a ``steering.runs.CompletionOutcome``) landed in the ledger, and its warnings."""
    sha256, every_warning = outcome.result.output_sha256, [*warnings, *outcome.warnings]
    return convert(outcome, LedgerRun, output_sha256=sha256, warnings=every_warning)


def choice(text: str, finish_reason: str) -> ChatChoice:
    return ChatChoice(index=0, message=ChatChoiceMessage(role="assistant", content=text), finish_reason=finish_reason)


def usage_of(result: Any) -> Usage:
    """The token counts of a generation (a ``steering.runs`` result)."""
    return Usage(result.prompt_tokens, result.completion_tokens, result.prompt_tokens + result.completion_tokens)


def served_models(runtime: Runtime) -> list[ModelCard]:
    generation = runtime.generation
    if generation is None:
        return []
    config = generation.engine.loaded.path / "config.json"  # when it was written here: the same on every server
    created = int(config.stat().st_mtime) if config.exists() else 0
    return [ModelCard(id=generation.engine.model_id, object="model", created=created, owned_by="profile-ledger")]


class ChatController(Controller):
    path = "/v1"
    tags = ["generation"]

    @get("/models", summary="The model this server generates with (OpenAI shape)", sync_to_thread=False)
    def list_models(self, runtime: NamedDependency[Runtime]) -> ModelList:
        return ModelList(object="list", data=served_models(runtime))

    @get("/models/{model_id:str}", summary="The model, if this server serves it (OpenAI shape)", sync_to_thread=False,
         responses=responses(NOT_FOUND, openai=True))
    def get_model(self, model_id: FromPath[str], runtime: NamedDependency[Runtime]) -> ModelCard:
        for card in served_models(runtime):
            if card.id == model_id:
                return card
        raise ModelNotFoundError(f"this server does not serve the model {model_id!r}", field="model")

    @post(
        "/chat/completions",
        summary="Chat completion, steered by a profile version (OpenAI shape; stream=true for SSE)",
        description=(
            "Runs in the continuous batch: it joins the next forward step and its answer is byte-identical to the "
            "same request run alone. 503 `engine_busy` with `Retry-After` when the generation queue is full."
        ),
        **COMMAND_ROUTE,
        middleware=[watch_for_departure],
        responses=responses(NOT_FOUND, INVALID, BUSY_OR_UNAVAILABLE, TIMEOUT, TOO_LARGE, openai=True),
        opt={STREAMED: ChatCompletionChunk},
    )
    def chat_completions(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ChatCompletionRequest],
        runtime: NamedDependency[Runtime],
        context: NamedDependency[CommandContext],
    ) -> Response[ChatCompletion]:
        generation = generation_of(runtime)
        completion = completion_from(data)
        if data.min_position is not None:
            wait_for_steering(runtime, data.min_position)
        model = generation.engine.model_id
        if data.model is not None and data.model != model:
            raise ModelNotFoundError(f"this server serves {model!r}, not {data.model!r}", field="model")
        created = int(time.time())
        if data.stream and data.compare:
            raise ValidationError("compare cannot be combined with stream", field="compare")
        if data.stream_options is not None and not data.stream:
            raise ValidationError("stream_options is only for a streamed request (stream: true)",
                                  field="stream_options")
        warnings = generation.request_warnings(completion)  # refuses an impossible profile before any stream
        if data.stream:
            usage = bool(data.stream_options and data.stream_options.include_usage)
            streamed = self._stream(request, generation, completion, context, model, created, usage, warnings,
                                    token_check(request, runtime))
            return streamed  # type: ignore[return-value]
        with while_wanted(request, runtime) as unwanted:
            outcome = run_command(context, lambda: generation.complete(completion, compare=data.compare,
                                                                      abandoned=unwanted))
        result = outcome.result
        body = ChatCompletion(
            id=f"chatcmpl-{outcome.execution_id.hex}",
            object="chat.completion",
            created=created,
            model=model,
            choices=[choice(result.text, result.finish_reason)],
            usage=usage_of(result),
            system_fingerprint=fingerprint_id(outcome.fingerprint),
            ledger=ledger_run(outcome, warnings),
            unsteered=choice(outcome.unsteered.text, outcome.unsteered.finish_reason) if outcome.unsteered else None,
        )
        return Response(body, headers=position_headers(outcome.position))

    @staticmethod
    def _stream(
        request: Request[Any, Any, Any], generation: Any, completion: Any, context: CommandContext, model: str,
        created: int, usage: bool, warnings: list[str], still_allowed: Callable[[], bool] | None,
    ) -> Stream:
        """SSE chunks; with ``stream_options.include_usage`` a last chunk carries the token counts (as OpenAI's).
        ``still_allowed``: whether the request's token is still live, asked every :data:`TOKEN_RECHECK_SECONDS`: a
        token revoked or expired meanwhile cuts the answer short (an error event; what ran is recorded)."""
        recorded: list[Any] = []
        completion = dataclasses.replace(completion, execution_id=uuid4())  # its chunks' id, as a whole answer's
        # Resolve the profile and seed now, so a bad request is a 4xx rather than a broken stream.
        # Queued now, too: a full queue is a 503 rather than a broken stream.
        deltas = run_command(context, lambda: generation.stream(completion, on_recorded=recorded.append,
                                                                abandoned=request.scope.get(DEPARTED)))
        try:  # the answer begins with its first text: a request refused while it waited for a row (a server
            first = run_command(context, lambda: next(deltas, None))  # stopping) is a 503 too, not a broken stream
        except BaseException:
            deltas.close()
            raise
        stream_id = f"chatcmpl-{completion.execution_id.hex}"

        def frame(choices: list[ChunkChoice], **extra: Any) -> bytes:
            if usage:  # as OpenAI's: then every chunk has the field, null but in the last
                extra.setdefault("usage", None)
            body = ChatCompletionChunk(id=stream_id, object="chat.completion.chunk", created=created, model=model,
                                       choices=choices, **extra)
            return b"data: " + msgspec.json.encode(body) + b"\n\n"

        def chunk(delta: ChunkDelta, finish_reason: str | None, **extra: Any) -> bytes:
            return frame([ChunkChoice(index=0, delta=delta, finish_reason=finish_reason)], **extra)

        def events() -> Iterator[bytes]:
            try:
                yield chunk(ChunkDelta(role="assistant", content=""), None)
                text, checked = first, time.monotonic()
                while text is not None:
                    yield chunk(ChunkDelta(content=text), None)
                    if still_allowed is not None and time.monotonic() - checked >= TOKEN_RECHECK_SECONDS:
                        checked = time.monotonic()
                        if not still_allowed():
                            raise AuthenticationError(TOKEN_LAPSED)
                    text = run_command(context, lambda: next(deltas, None))
            except Exception as error:  # noqa: BLE001 - the answer has begun: the failure ends it as an error event
                failed = handle_exception(request, error)
                request.scope[ANSWERED] = failed.status_code  # type: ignore[literal-required]
                yield b"data: " + msgspec.json.encode(failed.content) + b"\n\n"
                yield b"data: [DONE]\n\n"
                return
            finally:
                deltas.close()  # a client that went away frees its row at the next step
            outcome = recorded[0] if recorded else None
            if outcome is None:
                yield chunk(ChunkDelta(), "stop")
            else:
                yield chunk(ChunkDelta(), outcome.result.finish_reason, ledger=ledger_run(outcome, warnings),
                            system_fingerprint=fingerprint_id(outcome.fingerprint))
                if usage:
                    yield frame([], usage=usage_of(outcome.result))
            yield b"data: [DONE]\n\n"

        return Stream(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


class ReplayController(Controller):
    path = "/api/executions/{execution_id:uuid}/replay"
    tags = ["executions"]

    @post(
        "/",
        summary="Re-run a recorded generation with its profile version and seed; records the replay",
        **COMMAND_ROUTE,
        middleware=[watch_for_departure],  # a client gone: the replay stops (what ran is recorded as partial)
        responses=responses(NOT_FOUND, INVALID, BUSY_OR_UNAVAILABLE, TOO_LARGE),
    )
    def replay(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[UUID],
        runtime: NamedDependency[Runtime],
        context: NamedDependency[CommandContext],
        data: JSONBody[ReplayExecution | None] = None,
    ) -> Response[ReplayRead]:
        from steering.runs import must_be_generation  # (torch is imported with the model, if one is loaded)

        found = execution_found(runtime.read_model.get_execution(execution_id), execution_id)  # not deleted with
        must_be_generation(found)  # its profile; an external run is never replayed, with a model loaded or not
        generation = generation_of(runtime)
        with while_wanted(request, runtime) as unwanted:
            outcome = run_command(with_reason(context, data), lambda: generation.replay(execution_id,
                                                                                        abandoned=unwanted))
        return Response(ReplayRead.of(outcome), headers=position_headers(outcome.replay.position))


class SteeringController(Controller):
    path = "/api/steering"
    tags = ["steering"]

    @get(
        "/status",
        summary="The steering hook: model, SAE, active profile version and the log position applied",
        sync_to_thread=True,
        responses=responses(TIMEOUT),
    )
    def status(
        self,
        runtime: NamedDependency[Runtime],
        min_position: Annotated[int | None, QueryParameter(
            **LOG_POSITION, description="Answer once the hook has applied this log position.")] = None,
    ) -> SteeringStatusRead:
        generation = runtime.generation
        if generation is None:
            return SteeringStatusRead(
                model_loaded=False, model_id=None, sae_id=None, sae_layer=None, device=None, dtype=None,
                active_profile_id=None, version=None, pinned=False, position=0, applied_at=None, feature_count=0,
                error=None,
            )
        if min_position is not None:
            wait_for_steering(runtime, min_position)
        engine, stats, status = generation.engine, generation.engine.stats(), generation.projector.status()
        return convert(
            status, SteeringStatusRead, model_loaded=True, model_id=engine.model_id, sae_id=engine.sae_id,
            sae_layer=engine.sae.layer if engine.sae is not None else None, device=str(engine.loaded.device),
            dtype=str(engine.loaded.dtype).removeprefix("torch."), active_profile_id=status.profile_id,
            scheduler=stats,
        )
