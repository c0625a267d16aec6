"""``/playground``: chat with a profile (or none), steered and unsteered side by side, streamed.

A run is recorded as an execution exactly as ``POST /v1/chat/completions`` records one (the steered
completion, with its profile version and seed); the unsteered side uses the same seed and is not recorded,
as with ``compare``. With htmx the form's answer opens a Server-Sent Events stream that carries both sides'
text as it is decided; without JavaScript the page answers with the finished texts.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, ServerSentEvent, Template
from litestar.response.sse import ServerSentEventMessage
from markupsafe import escape

from ledger.api.auth import requires
from ledger.api.bodies import refusal
from ledger.api.chat import (
    TOKEN_LAPSED, EitherSet, completion_from, generation_of, token_check, token_watch, watch_for_departure,
    while_wanted,
)
from ledger.api.observability import DEPARTED
from ledger.api.chat_schemas import ChatCompletionRequest
from ledger.api.commands import run_command
from ledger.console.profiles import Form, runtime_of
from ledger.console.rendering import FIXED_BY_TYPING_AGAIN, Problem, form_again, is_htmx, page, render_fragment
from ledger.console.results import Held, shown_at_its_own_address
from ledger.console.session import command_context, viewer_of
from ledger.console.views import decimal_text, optional_int, optional_text
from ledger.domainmodel import CommandContext
from ledger.errors import ValidationError
from ledger.values import INT64_MAX

PROFILES_OFFERED = 200
DEFAULTS = {"prompt": "Tell me about the sea.", "seed": "7", "temperature": "0.7", "max_tokens": "40", "compare": True}


@dataclass(frozen=True)
class PendingRun:
    completion: Any  # steering.runs.Completion
    compare: bool
    context: CommandContext
    viewer: str | None
    created: float


PENDING = Held()  # runs submitted through the form and not yet streamed; each streamed once, by its submitter


def completion_of(form: dict[str, Any]) -> tuple[Any, bool]:
    prompt = (form.get("prompt") or "").strip()
    if not prompt:
        raise ValidationError("write a prompt", field="prompt")
    seed = optional_int(form.get("seed"), "seed")
    max_tokens = optional_int(form.get("max_tokens"), "max_tokens", minimum=1)
    chat = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 64 if max_tokens is None else max_tokens,
        "temperature": decimal_text(form.get("temperature") or "1", "temperature"),
        "seed": secrets.randbelow(INT64_MAX) if seed is None else seed,  # drawn here, so both sides share it
        "profile": optional_text(form.get("profile")),
        "profile_version": optional_int(form.get("profile_version"), "profile_version", minimum=1),
    }
    try:  # the API's request, with its bounds
        data = msgspec.convert(chat, ChatCompletionRequest, strict=False)
    except msgspec.ValidationError as error:
        raise refusal(error, ChatCompletionRequest) from None
    return completion_from(data), form.get("compare") == "on"


def _choices(request: Request[Any, Any, Any], wanted: str | None = None) -> dict[str, Any]:
    """The profiles the form offers (the first of them by name, and ``wanted``, an id or a name, wherever it
    sorts), the one of them chosen (``wanted``'s id), and the active one."""
    reads = runtime_of(request).read_model
    profiles: list[Any] = reads.profile_choices(PROFILES_OFFERED)
    found = (reads.get_profile(wanted) or reads.get_profile_by_name(wanted)) if wanted else None
    if found is not None and all(offered.id != found.id for offered in profiles):
        profiles.append(found)
    return {"profiles": profiles, "chosen": str(found.id) if found else "", "active": reads.active_profile()}


class PlaygroundPages(Controller):
    path = "/playground"

    @get("/", name="console:playground", sync_to_thread=True)
    def playground(self, request: Request[Any, Any, Any], profile: FromQuery[str | None] = None) -> Template:
        """The form, with ``profile`` (an id or a name) chosen; one that names no live profile is a 404 page that
        says so above the form, rather than the active profile chosen unsaid."""
        choices = _choices(request, profile)
        missing = profile is not None and profile.strip() != "" and not choices["chosen"]
        problem = Problem(404, "profile_not_found", f"no live profile has the id or name {profile.strip()[:100]!r}: "
                          "choose one below") if missing else None
        return page(
            request,
            "playground.html.j2",
            404 if missing else 200,
            form={**DEFAULTS, "profile": "" if missing else profile or ""},
            model_loaded=runtime_of(request).generation is not None,
            problem=problem,
            **choices,
        )

    @post("/", name="console:run", middleware=[watch_for_departure])  # a browser gone: its run leaves the batch
    async def run(self, request: Request[Any, Any, Any], form: Form) -> Template | Redirect:
        generation = generation_of(runtime_of(request))
        context = command_context(request)
        try:
            completion, compare = completion_of(form)
            choices = await anyio.to_thread.run_sync(_choices, request, form.get("profile"))
            # as the API's answer carries them: the profile targets another model, SAE or layer (an impossible one
            # is refused here, before anything runs); resolving the profile reads the store
            warnings = await anyio.to_thread.run_sync(generation.request_warnings, completion)
        except Exception as error:  # noqa: BLE001 - raised on unless typing again fixes it
            return await form_again(request, error, lambda problem: page(
                request, "playground.html.j2", problem.status, form=form, model_loaded=True, problem=problem,
                **_choices(request, form.get("profile"))), FIXED_BY_TYPING_AGAIN | {404})  # a version typed
        common = {**choices, "form": {**form, "compare": compare}, "model_loaded": True, "warnings": warnings}
        if is_htmx(request):
            viewer = viewer_of(request)
            key = PENDING.add(PendingRun(completion, compare, context, viewer.name if viewer else None, time.monotonic()))
            return page(request, "playground.html.j2", stream_key=key, compare=compare, **common)
        with while_wanted(request, runtime_of(request)) as unwanted:
            outcome = await anyio.to_thread.run_sync(
                lambda: run_command(context, lambda: generation.complete(completion, compare=compare,
                                                                         abandoned=unwanted)))
        return shown_at_its_own_address(request, "playground.html.j2", outcome=outcome, compare=compare, **common)

    @get("/runs/{key:str}", name="console:run-stream", opt=requires("editor"),  # it records an execution
         middleware=[watch_for_departure])  # a browser gone before the first delta: its run leaves the queue
    async def stream(self, request: Request[Any, Any, Any], key: FromPath[str]) -> ServerSentEvent:
        generation = generation_of(runtime_of(request))
        viewer = viewer_of(request)
        run = PENDING.take(key, viewer.name if viewer else None)
        return ServerSentEvent(_stream(request, generation, run), headers={"Cache-Control": "no-cache"})


_DONE = object()


def _produce(side: str, deltas: Iterator[str], out: queue.Queue[Any], context: CommandContext) -> None:
    try:
        while (text := run_command(context, lambda: next(deltas, _DONE))) is not _DONE:
            out.put((side, text))
    except Exception as error:  # noqa: BLE001 - shown to the user in the stream
        out.put(("error", f"{side}: {error}"))
    finally:
        out.put((side, _DONE))


async def _stream(
    request: Request[Any, Any, Any], generation: Any, run: PendingRun
) -> AsyncIterator[ServerSentEventMessage]:
    """Both sides' text deltas as they are decided, then a link to the recorded execution. A browser that leaves
    closes this stream: both sides then leave the batch at the next step."""
    with token_watch(token_check(request, runtime_of(request))) as lapsed:  # revoked or expired meanwhile: stop
        async with contextlib.aclosing(_streamed(request, generation, run, lapsed)) as messages:
            async for message in messages:
                yield message


async def _streamed(
    request: Request[Any, Any, Any], generation: Any, run: PendingRun, lapsed: threading.Event
) -> AsyncIterator[ServerSentEventMessage]:
    recorded: list[Any] = []
    out: queue.Queue[Any] = queue.Queue()
    completion = run.completion
    ended = threading.Event()
    closed = EitherSet(ended, request.scope.get(DEPARTED), lapsed)  # this stream closed, its browser gone
    def started() -> dict[str, Any]:  # both sides as ``compare`` runs them, recorded together; or the steered one
        if run.compare:
            return generation.stream_compared(completion, on_recorded=recorded.append, abandoned=closed)
        return {"steered": generation.stream(completion, on_recorded=recorded.append, abandoned=closed)}

    try:  # resolving the profile reads the store
        sides = await anyio.to_thread.run_sync(lambda: run_command(run.context, started))
    except Exception as error:  # noqa: BLE001 - a profile that does not resolve, say
        yield ServerSentEventMessage(data=f"<p class='error'>{escape(str(error))}</p>", event="done")
        return
    try:
        for side, deltas in sides.items():
            threading.Thread(target=_produce, args=(side, deltas, out, run.context), daemon=True).start()
        running, ended_early = len(sides), False
        yield ServerSentEventMessage(data=None, comment="started")
        while running:
            side, text = await anyio.to_thread.run_sync(out.get)
            if text is _DONE:
                running -= 1
            elif side == "error":
                ended_early = True
                yield ServerSentEventMessage(data=f"<p class='error'>{escape(text)}</p>", event="problem")
            else:
                yield ServerSentEventMessage(data=f"<span>{escape(text)}</span>", event=side)
        if lapsed.is_set():
            yield ServerSentEventMessage(data=f"<p class='error'>{escape(TOKEN_LAPSED)}</p>", event="problem")
        if recorded:
            recorded_as = render_fragment(request, "_recorded.html.j2", outcome=recorded[0])
            yield ServerSentEventMessage(data=recorded_as, event="done")
        else:  # one cut short (a server stopping) is recorded as partial, out of this request's sight
            said = "The run did not finish: what it generated, if anything, is in the profile's executions." \
                if ended_early else "The run was not recorded."
            yield ServerSentEventMessage(data=f"<p class='error'>{said}</p>", event="done")
    finally:
        ended.set()
