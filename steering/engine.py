"""SteeringEngine: one model (and optional SAE) serving concurrent, individually steered requests."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timezone

import torch

from .errors import SAEFormatError, SteeringError
from .generate import STEP_TOKENS, GenerationRequest, GenerationResult
from .hooks import SteeringVector
from .layers import check_layer
from .models import LoadedModel
from .sae import SAE, check_feature_indices, steering_vector
from .scheduler import (
    MAX_BATCH, MAX_QUEUE, CutShortError, EngineClosedError, RequestCancelledError, Scheduler, SchedulerStats,
)

VECTOR_CACHE_SIZE = 256  # profile versions whose steering vector is kept


@dataclass(frozen=True, eq=False)
class SteeringSnapshot(SteeringVector):
    """An immutable, ready-to-apply steering profile version."""

    profile_id: str
    version: int
    method: str
    applied_at: datetime


__all__ = ["CutShortError", "EngineClosedError", "SteeringEngine", "SteeringSnapshot"]


class SteeringEngine:
    """Caches steering vectors, holds the active profile, and serves requests by continuous batching.

    Requests go to a `scheduler.Scheduler`: up to `max_batch` run together, joining and leaving at any
    step; up to `max_queue` more wait; beyond that a request is refused (SchedulerFullError).
    """

    def __init__(
        self,
        loaded: LoadedModel,
        sae: SAE | None = None,
        *,
        model_id: str | None = None,
        sae_id: str | None = None,
        max_batch: int = MAX_BATCH,
        max_queue: int = MAX_QUEUE,
        step_tokens: int = STEP_TOKENS,
    ) -> None:
        if sae is not None and sae.d_in != loaded.d_model:
            raise SAEFormatError(f"the SAE reads vectors of {sae.d_in} values; the model's hidden size is "
                                 f"{loaded.d_model}: it was made for another model")
        self.loaded = loaded
        self.sae = sae
        self.model_id = model_id or loaded.path.name
        self.sae_id = sae_id or (sae.path.name if sae is not None and sae.path else None)
        self._vectors: OrderedDict[tuple[str, int, str], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self._active: SteeringSnapshot | None = None
        self.scheduler = Scheduler(loaded, max_batch=max_batch, max_queue=max_queue, step_tokens=step_tokens)

    # -- steering profiles ---------------------------------------------------

    def check_compatibility(
        self, model_id: str, sae_id: str | None, layer: int, steering: Mapping[int, float] | None = None
    ) -> list[str]:
        """Warnings for a profile that targets another model/SAE/layer; errors for impossible ones."""
        check_layer(self.loaded.model, layer)
        warnings: list[str] = []
        if model_id != self.model_id:
            warnings.append(f"profile targets model {model_id!r} but the engine serves {self.model_id!r}")
        if self.sae is None:
            if steering:
                raise SteeringError("the engine has no SAE loaded, so it cannot apply feature steering")
            return warnings
        if sae_id is not None and sae_id != self.sae_id:
            warnings.append(f"profile targets SAE {sae_id!r} but the engine has {self.sae_id!r}")
        if layer != self.sae.layer:
            warnings.append(f"profile steers layer {layer} but the SAE was trained on layer {self.sae.layer}")
        if steering:
            check_feature_indices(self.sae, list(steering))
        return warnings

    def snapshot(
        self, profile_id: str, version: int, steering: Mapping[int, float], layer: int | None = None, method: str = "add"
    ) -> SteeringSnapshot:
        """A snapshot for one profile version; its vector is computed once and cached."""
        if self.sae is None:
            raise SteeringError("the engine has no SAE loaded, so it cannot apply feature steering")
        layer = self.sae.layer if layer is None else layer
        check_layer(self.loaded.model, layer)
        key = (profile_id, version, method)
        with self._lock:
            vector = self._vectors.get(key)
            if vector is not None:
                self._vectors.move_to_end(key)
        if vector is None:
            vector = steering_vector(self.sae, steering, method, device=self.loaded.device, dtype=self.loaded.dtype)
            with self._lock:
                self._vectors[key] = vector
                while len(self._vectors) > VECTOR_CACHE_SIZE:
                    self._vectors.popitem(last=False)
        return SteeringSnapshot(layer, vector, profile_id, version, method, datetime.now(timezone.utc))

    def set_active(
        self, profile_id: str, version: int, steering: Mapping[int, float], layer: int | None = None, method: str = "add"
    ) -> SteeringSnapshot:
        """Make a profile version the active one (swapped atomically)."""
        snapshot = self.snapshot(profile_id, version, steering, layer, method)
        self._active = snapshot
        return snapshot

    def clear_active(self) -> None:
        """No active profile: requests using the active steering run unsteered."""
        self._active = None

    @property
    def active(self) -> SteeringSnapshot | None:
        return self._active

    # -- generation ------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> Future[GenerationResult]:
        """Queue one request (steered by its own `steering`, or not); it joins the running batch at once."""
        return self.scheduler.submit(request).future

    def generate(
        self, requests: Sequence[GenerationRequest], abandoned: threading.Event | None = None
    ) -> list[GenerationResult]:
        """Results for `requests`, batched with whatever else is in flight; once `abandoned` is set (the caller went
        away), they leave the batch at the next step and RequestCancelledError is raised, with what the first
        request produced (all of it, if it had ended)."""
        tickets = []
        if abandoned is None:
            abandoned = threading.Event()  # (it also makes them one caller's requests: see the scheduler)
        try:
            for request in requests:
                tickets.append(self.scheduler.submit(request, abandoned=abandoned))
            return [ticket.future.result() for ticket in tickets]
        except RequestCancelledError as error:
            for ticket in tickets:
                ticket.cancel()
            first = tickets[0].future
            if error.request is requests[0] or first.cancelled() or first.exception() is not None:
                raise
            raise RequestCancelledError(str(error), requests[0], first.result()) from None
        except BaseException:
            for ticket in tickets:
                ticket.cancel()
            raise

    def stream(
        self, request: GenerationRequest, on_done: Callable[[GenerationResult], None] | None = None,
        abandoned: threading.Event | None = None,
        on_unread: Callable[[GenerationResult | RequestCancelledError], None] | None = None,
    ) -> Iterator[str]:
        """Text deltas of one request (queued now; closing the iterator early, or ``abandoned`` set, cancels it).
        ``on_unread`` hears, once, of what a request its reader left produced: its cancellation (on the scheduler's
        thread, whether or not anyone still reads), or its result when it finished before its last delta was read."""
        ticket = self.scheduler.submit(request, stream=True, abandoned=abandoned)
        if on_unread is not None:
            def heard(future: Future[GenerationResult]) -> None:
                error = None if future.cancelled() else future.exception()
                if isinstance(error, RequestCancelledError):
                    on_unread(error)

            ticket.future.add_done_callback(heard)
        return ticket.deltas(on_done, on_unread)

    def stats(self) -> SchedulerStats:
        return self.scheduler.stats()

    def drain(self, grace_s: float) -> None:
        """Before a shutdown: take no more requests, refuse those waiting for a place (they ran nothing), give the
        running ones ``grace_s`` seconds to finish, then cut them short (their callers get what they generated, as
        CutShortError)."""
        deadline = time.monotonic() + grace_s
        if self.scheduler.stop_taking() == 0:
            return
        while self.scheduler.stats().running and time.monotonic() < deadline:
            time.sleep(0.05)
        self.scheduler.cut_short()

    def close(self) -> None:
        """Finish admitted and queued work and stop the scheduler."""
        self.scheduler.close()

    def __enter__(self) -> SteeringEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
