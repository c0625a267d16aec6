"""Generations as executions: resolve the profile version, run the engine, record the run, replay it later.

Works against the ledger application's public commands and queries (``get_profile``, ``find_profile``,
``record_execution``, ``get_execution``); each request carries its own steering snapshot, so concurrent
requests with different profiles never see each other's steering.
"""

from __future__ import annotations

import contextvars
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from uuid import UUID

from ledger.domainmodel import DELETED_PROFILE, command_context
from ledger.errors import ContextLengthExceededError, ProfileIncompatibleError, ProfileNotFoundError, ValidationError
from ledger.idempotency import IdempotencyKeyInUseError, claiming
from ledger.outages import is_database_unavailable

from .engine import SteeringEngine, SteeringSnapshot
from .errors import ContextLengthError, SteeringError
from .generate import FINISH_CANCELLED, GenerationRequest, GenerationResult, environment_fingerprint
from .projector import ProfileSpec, SteeringProjector
from .sae import STEERING_METHODS
from .scheduler import EngineClosedError, RequestCancelledError, SchedulerFullError

SEED_MAX = 2**63 - 1
PROJECTOR_WAIT_SECONDS = 2.0  # a chat without a profile waits this long at most for the projector
SERVED_RECORD_PATIENCE_S = 120.0  # a generation already served waits this long at most for its database
T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completion:
    """One chat completion to produce (already validated at the edge)."""

    messages: Sequence[Mapping[str, str]]
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    profile: str | None = None  # id or name; None → the active profile, if any
    profile_version: int | None = None
    method: str = "add"
    replay_of: UUID | None = None
    within_context: bool = False  # the caller named max_tokens: refuse a prompt that leaves less room
    execution_id: UUID | None = None  # the id to record it under, when the caller names it before it runs (a stream)


@dataclass(frozen=True)
class CompletionOutcome:
    result: GenerationResult
    seed: int
    profile_id: UUID | None
    profile_version: int | None
    execution_id: UUID
    position: int
    fingerprint: dict[str, Any]
    warnings: tuple[str, ...] = ()
    unsteered: GenerationResult | None = None


@dataclass(frozen=True)
class ReplayOutcome:
    reproduced: bool
    original_execution_id: UUID
    original_sha256: str
    replay: CompletionOutcome
    warnings: tuple[str, ...] = ()
    original_status: str = "success"  # "partial": the original was cut short; the replay ran as far as it did


def must_be_generation(execution: Any) -> None:
    """Only generations can be replayed (an external run was not made here): refused before any model is loaded."""
    if execution.kind != "generation":
        raise ValidationError(f"execution {execution.id} is not a generation; only generations can be replayed")


class GenerationService:
    def __init__(self, ledger: Any, engine: SteeringEngine, projector: SteeringProjector | None = None) -> None:
        self.ledger = ledger
        self.engine = engine
        self.projector = projector
        self._recording: set[threading.Thread] = set()  # records made off the callers' threads, under way
        self._recording_lock = threading.Lock()

    def settle(self, timeout: float) -> bool:
        """Wait (up to ``timeout`` seconds) for the records made off the callers' threads (before the ledger closes:
        what was served must reach the log); False if some are still under way."""
        deadline = time.monotonic() + timeout
        while True:
            with self._recording_lock:
                pending = next(iter(self._recording), None)
            if pending is None:
                return True
            pending.join(max(0.0, deadline - time.monotonic()))
            if pending.is_alive():
                logger.error("a served generation was still being recorded at shutdown: it may be missing from the log")
                return False

    def _in_background(self, command: contextvars.Context, name: str, work: Callable[..., Any], *args: Any) -> None:
        """``work(*args)`` on a thread of its own, in ``command``'s context (its actor): what is heard on the
        scheduler's thread, or after the caller has gone, must not hold either up. :meth:`settle` waits for it."""

        def recording() -> None:
            try:
                command.run(work, *args)
            finally:
                with self._recording_lock:
                    self._recording.discard(threading.current_thread())

        thread = threading.Thread(target=recording, name=name, daemon=True)
        with self._recording_lock:
            self._recording.add(thread)
        thread.start()

    # -- profiles ------------------------------------------------------------------------------------
    def spec_at(self, profile_id: UUID, version: int | None) -> ProfileSpec:
        """The spec of a profile's version (None: the version in force, as every read shows it)."""
        if version is None:
            state = self.ledger.profile_in_force(profile_id)
        else:
            state = self.ledger.get_profile(profile_id, version=version)
        return ProfileSpec(state.id, state.version, state.steering, state.layer, state.model_id, state.sae_id)

    def resolve(self, profile: str | None, version: int | None) -> ProfileSpec | None:
        """The profile version a request names (id or name), or the active one when it names none."""
        if profile is None:
            if version is not None:
                raise ValidationError("profile_version needs a profile", field="profile_version")
            if self.projector is not None:
                # an activation answered by any server is in the log: let the projector reach it first (a few
                # milliseconds; one indexed read next to a generation)
                self.projector.wait_for(self.ledger.recorder.max_notification_id() or 0, PROJECTOR_WAIT_SECONDS)
                return self.projector.current_spec()
            slot = self.ledger.active_slot()  # no projector (a one-off CLI run): read the slot itself
            if slot is None or slot.profile_id is None:
                return None
            return self.spec_at(slot.profile_id, slot.pinned_version)
        try:
            profile_id: UUID | None = UUID(profile)
        except ValueError:
            profile_id = self.ledger.find_profile(profile)
        if profile_id is None:
            raise ProfileNotFoundError(f"no profile named {profile!r}", profile=profile)
        return self.spec_at(profile_id, version)

    def snapshot(self, spec: ProfileSpec | None, method: str) -> SteeringSnapshot | None:
        if method not in STEERING_METHODS:
            raise ValidationError(f"method must be one of {', '.join(STEERING_METHODS)} (got {method!r})",
                                  field="method")
        if spec is None or not spec.steering:
            return None
        try:
            return self.engine.snapshot(str(spec.profile_id), spec.version, spec.steering, spec.layer, method)
        except SteeringError as error:
            raise ProfileIncompatibleError(str(error), profile_id=str(spec.profile_id), version=spec.version) from None

    def compatibility_warnings(self, spec: ProfileSpec) -> list[str]:
        """Seed 000's check before activation: warnings for another model/SAE/layer, 422 for impossible ones."""
        layer = spec.layer if spec.layer is not None else (self.engine.sae.layer if self.engine.sae else 0)
        try:
            return self.engine.check_compatibility(spec.model_id or self.engine.model_id, spec.sae_id, layer, spec.steering)
        except SteeringError as error:
            raise ProfileIncompatibleError(str(error), profile_id=str(spec.profile_id), version=spec.version) from None

    def request_warnings(self, completion: Completion) -> list[str]:
        """The warnings for the profile a completion names (or the active one); raises when it is impossible."""
        spec = self.resolve(completion.profile, completion.profile_version)
        return [] if spec is None else self.compatibility_warnings(spec)

    # -- generation ----------------------------------------------------------------------------------
    def complete(
        self, completion: Completion, *, compare: bool = False, abandoned: threading.Event | None = None
    ) -> CompletionOutcome:
        """Generate and record; once ``abandoned`` is set (the caller went away), the generation stops
        (RequestCancelledError), recorded as ``partial`` if it had produced anything."""
        spec, request = self._prepare(completion)
        requests = [request, replace(request, steering=None)] if compare else [request]
        try:
            results = _run(self.engine.generate, requests, abandoned)
        except RequestCancelledError as error:
            self._record_unread(completion, spec, request, error)
            raise
        outcome = self._record(completion, spec, request, results[0], unsteered=results[1] if compare else None)
        return replace(outcome, unsteered=results[1] if compare else None)

    def stream(
        self, completion: Completion, on_recorded: Callable[[CompletionOutcome], None] | None = None,
        abandoned: threading.Event | None = None,
    ) -> Iterator[str]:
        """Text deltas; the execution is recorded (in the consumer's thread) when the last delta has been produced.
        Once ``abandoned`` is set (the caller went away), the generation stops whether or not anyone still reads,
        and what it had produced is recorded as ``partial``; one that ended though its reader left before its last
        delta is recorded whole (each on a thread of its own, as the command's actor)."""
        spec, request = self._prepare(completion)
        command = contextvars.copy_context()

        def done(result: GenerationResult) -> None:
            outcome = self._record_served(completion, spec, request, result)
            if on_recorded is not None:
                on_recorded(outcome)

        def unread(outcome: GenerationResult | RequestCancelledError) -> None:
            self._in_background(command, "record-unread", self._record_unread, completion, spec, request, outcome)

        return _run(self.engine.stream, request, on_done=done, abandoned=abandoned, on_unread=unread)

    def stream_compared(
        self, completion: Completion, on_recorded: Callable[[CompletionOutcome], None] | None = None,
        abandoned: threading.Event | None = None,
    ) -> dict[str, Iterator[str]]:
        """:meth:`stream` with the unsteered twin beside it (the same seed), as ``compare`` runs it: each side's
        text deltas. The steered side is recorded once both have ended, the twin's under ``details.unsteered``
        (before the last delta of the side that ends last is handed out); a steered side its reader left (or cut
        short) is recorded as :meth:`stream` records it, with what its twin produced, once both have ended."""
        spec, request = self._prepare(completion)
        command = contextvars.copy_context()
        ended: dict[str, Any] = {}
        left: set[str] = set()
        lock = threading.Lock()

        def record() -> None:
            steered, unsteered = ended["steered"], ended["unsteered"]
            if "steered" in left:  # whole or cut short, its reader gone: recorded as a stream's is, with its twin
                self._record_unread(completion, spec, request, steered, unsteered=unsteered)
                return
            outcome = self._record_served(completion, spec, request, steered, unsteered=unsteered)
            if on_recorded is not None:
                on_recorded(outcome)

        def end(side: str, outcome: GenerationResult | RequestCancelledError | None, *, reader_left: bool = False
                ) -> None:
            with lock:
                ended[side] = outcome
                if reader_left:
                    left.add(side)
                if len(ended) < 2:
                    return
            if left:  # heard on the scheduler's thread: recorded on one of its own, as the command's actor
                self._in_background(command, "record-compared", record)
            else:
                record()

        def twin_left(outcome: GenerationResult | RequestCancelledError) -> None:
            end("unsteered", outcome if isinstance(outcome, GenerationResult) else outcome.partial, reader_left=True)

        return {
            "steered": _run(self.engine.stream, request, on_done=lambda result: end("steered", result),
                            abandoned=abandoned, on_unread=lambda outcome: end("steered", outcome, reader_left=True)),
            "unsteered": _run(self.engine.stream, replace(request, steering=None),
                              on_done=lambda result: end("unsteered", result), abandoned=abandoned,
                              on_unread=twin_left),
        }

    def replay(self, execution_id: UUID, abandoned: threading.Event | None = None) -> ReplayOutcome:
        """Run a recorded generation again with its profile version and seed (a compare's unsteered side too: both
        must come out the same); record the replay. Once ``abandoned`` is set (the caller went away), or the server
        cuts it short, it stops, recorded as a generation is (``partial``, if it produced anything)."""
        original = self.ledger.get_execution(execution_id)
        must_be_generation(original)
        details = original.details
        sampling = details.get("sampling", {})
        profile_id, version = original.profile_id, original.profile_version
        deleted = details.get(DELETED_PROFILE) or details.get("replayed_profile")  # (its name before it was general)
        if profile_id is None and deleted:  # recorded once its profile was deleted
            profile_id, version = deleted["id"], deleted["version"]
        completion = Completion(
            messages=details["messages"],
            # a generation given up part way ran to that many tokens
            max_tokens=details["completion_tokens"] if original.status == "partial" else sampling["max_tokens"],
            temperature=sampling["temperature"],
            top_p=sampling["top_p"],
            seed=original.seed,
            stop=tuple(sampling.get("stop", ())),
            profile=str(profile_id) if profile_id else None,
            profile_version=version,
            method=details.get("method", "add"),
            replay_of=execution_id,
        )
        if completion.profile is None:
            spec, request = None, self.request_for(completion, None, original.seed)
        else:
            spec, request = self._prepare(completion)
        # a compare's unsteered side is run and checked again too (but for one cut short: it ended elsewhere)
        twin = details.get("unsteered") if original.status != "partial" else None
        try:
            results = _run(self.engine.generate, [request, replace(request, steering=None)] if twin else [request],
                           abandoned)
        except RequestCancelledError as error:
            self._record_unread(completion, spec, request, error)
            raise
        original_sha = details.get("output_sha256", "")
        twin_same = not twin or results[1].output_sha256 == twin.get("output_sha256")
        reproduced = results[0].output_sha256 == original_sha and twin_same
        outcome = self._record(completion, spec, request, results[0], unsteered=results[1] if twin else None,
                               reproduced=reproduced)
        cut = (f"the original was cut short (partial, after {completion.max_tokens} tokens of the "
               f"{sampling['max_tokens']} asked for): the replay ran as far as it did",
               ) if original.status == "partial" else ()
        served = tuple(self.compatibility_warnings(spec)) if spec is not None else ()  # as the original was told
        warnings = cut + served + tuple(
            f"environment differs: {key} was {before!r}, now {outcome.fingerprint.get(key)!r}"
            for key, before in details.get("fingerprint", {}).items()
            if outcome.fingerprint.get(key) != before
        )
        return ReplayOutcome(
            reproduced=reproduced,
            original_execution_id=execution_id,
            original_sha256=original_sha,
            replay=replace(outcome, warnings=outcome.warnings + warnings),
            warnings=warnings,
            original_status=original.status,
        )

    # -- internals -----------------------------------------------------------------------------------
    def _prepare(self, completion: Completion) -> tuple[ProfileSpec | None, GenerationRequest]:
        spec = self.resolve(completion.profile, completion.profile_version)
        seed = completion.seed if completion.seed is not None else secrets.randbelow(SEED_MAX)
        return spec, self.request_for(completion, self.snapshot(spec, completion.method), seed)

    @staticmethod
    def request_for(completion: Completion, steering: SteeringSnapshot | None, seed: int) -> GenerationRequest:
        """What the engine runs for ``completion``: steered by ``steering`` (None: unsteered), with ``seed``."""
        return GenerationRequest(
            messages=[dict(message) for message in completion.messages],
            max_tokens=completion.max_tokens,
            temperature=completion.temperature,
            top_p=completion.top_p,
            seed=seed,
            stop=tuple(completion.stop),
            steering=steering,
            within_context=completion.within_context,
            actor=command_context.get().actor,
        )

    def _record_unread(
        self, completion: Completion, spec: ProfileSpec | None, request: GenerationRequest,
        outcome: GenerationResult | RequestCancelledError, unsteered: GenerationResult | None = None,
    ) -> None:
        """A generation its caller left is recorded all the same: whole if it had ended, else (status ``partial``,
        the output so far) when it had produced anything. What was served is in the log. It claims no
        Idempotency-Key (its caller never had the answer), so a retry with the key runs again."""
        result = outcome if isinstance(outcome, GenerationResult) else outcome.partial
        if result is None or isinstance(outcome, RequestCancelledError) and outcome.request is not request:
            return  # nothing produced, or what the unsteered twin produced
        status = "partial" if result.finish_reason == FINISH_CANCELLED else "success"
        try:
            with claiming(None):
                recorded = self._record_served(completion, spec, request, result, status=status, unsteered=unsteered)
        except Exception:  # the caller is gone: nobody else hears of it
            logger.exception("a generation its caller left was not recorded")
            return
        if isinstance(outcome, RequestCancelledError):  # (a caller cut short by a shutdown hears where it is)
            outcome.execution_id = recorded.execution_id

    def _record_served(self, *args: Any, **kwargs: Any) -> CompletionOutcome:
        """:meth:`_record` for a generation its caller has been handed as it ran (a stream), which must not be lost:
        a database away for a moment is waited for (up to ``SERVED_RECORD_PATIENCE_S``, the stream's end held
        meanwhile); a request with its Idempotency-Key that committed first (on another server) leaves it recorded
        without the key, the other's."""
        deadline, pause = time.monotonic() + SERVED_RECORD_PATIENCE_S, 0.25
        while True:
            try:
                try:
                    return self._record(*args, **kwargs)
                except IdempotencyKeyInUseError:
                    with claiming(None):
                        return self._record(*args, **kwargs)
            except Exception as error:
                if not is_database_unavailable(error) or time.monotonic() + pause > deadline:
                    raise
                logger.warning("a served generation waits for its database to be recorded: %s", error)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

    def _record(
        self, completion: Completion, spec: ProfileSpec | None, request: GenerationRequest, result: GenerationResult,
        status: str = "success", unsteered: GenerationResult | None = None, reproduced: bool | None = None,
    ) -> CompletionOutcome:
        """Record the generation as an execution; with ``unsteered`` (a compare), what the unsteered twin served
        too, under ``details.unsteered``; a replay, whether it reproduced the original (``details.reproduced``)."""
        fingerprint = environment_fingerprint(self.engine.loaded, self.engine.sae)
        details = {
            "messages": [dict(m) for m in completion.messages],
            "sampling": {
                "max_tokens": request.max_tokens, "temperature": request.temperature, "top_p": request.top_p,
                "stop": list(request.stop),
            },
            "method": completion.method,
            "steered": request.steering is not None,
            **_served(result),
            "prompt_tokens": result.prompt_tokens,
            "fingerprint": fingerprint,
            "served_with": {"model_id": self.engine.model_id, "sae_id": self.engine.sae_id,
                            "layer": request.steering.layer if request.steering is not None else None},
        }
        warned = self.compatibility_warnings(spec) if spec is not None else []
        if warned:
            details["warnings"] = warned
        if reproduced is not None:
            details["reproduced"] = reproduced
        if unsteered is not None:
            details["unsteered"] = _served(unsteered)
        profile_id = spec.profile_id if spec else None
        version = spec.version if spec else None
        run = {"seed": request.seed, "status": status, "duration_ms": round(result.duration_s * 1000, 3),
               "kind": "generation", "details": details, "replay_of": completion.replay_of,
               "execution_id": completion.execution_id}
        warnings: tuple[str, ...] = ()
        try:
            recorded = self.ledger.record_execution(profile_id, version=version, **run)
        except ProfileNotFoundError:
            if profile_id is None:
                raise
            # The profile was deleted while this ran (or, for a replay, since the run): every generation is
            # recorded all the same, without a live profile, its details naming the version it ran with.
            details[DELETED_PROFILE] = {"id": str(profile_id), "version": version}
            recorded = self.ledger.record_execution(None, **run)
            warnings = (f"profile {profile_id} was deleted before this run was recorded: it is recorded without "
                        f"it, details.{DELETED_PROFILE} naming version {version}",)
            profile_id = version = None  # the answer says where the run landed, as its record does
        return CompletionOutcome(
            result=result, seed=request.seed, profile_id=profile_id, profile_version=version,
            execution_id=recorded.execution_id, position=recorded.position, fingerprint=fingerprint,
            warnings=warnings,
        )


def _served(result: GenerationResult) -> dict[str, Any]:
    """What a generation served, as an execution records it."""
    return {
        "output": result.text.replace("\x00", "\ufffd"),  # stores cannot hold NUL; the digest is of the exact text
        "output_sha256": result.output_sha256,
        "completion_tokens": result.completion_tokens,
        "finish_reason": result.finish_reason,
    }


def _run(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call`` on the engine, its refusals of a request as the ledger's errors (the scheduler's own pass through)."""
    try:
        return call(*args, **kwargs)
    except (SchedulerFullError, EngineClosedError, RequestCancelledError):
        raise
    except ContextLengthError as error:
        raise ContextLengthExceededError(str(error), field="messages") from None
    except (SteeringError, ValueError) as error:
        raise ValidationError(str(error)) from None
