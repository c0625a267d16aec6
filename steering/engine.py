"""SteeringEngine: one model (and optional SAE) serving concurrent, individually steered requests."""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import torch

from .errors import SteeringError
from .generate import GenerationRequest, GenerationResult, generate, stream_generate, validate_request
from .hooks import SteeringVector
from .layers import check_layer
from .models import LoadedModel
from .sae import SAE, check_feature_indices, steering_vector


@dataclass(frozen=True, eq=False)
class SteeringSnapshot(SteeringVector):
    """An immutable, ready-to-apply steering profile version."""

    profile_id: str
    version: int
    method: str
    applied_at: datetime


class EngineClosedError(SteeringError, RuntimeError):
    """The engine no longer accepts requests."""


_STOP = object()


class SteeringEngine:
    """Caches steering vectors, holds the active profile, and batches concurrent requests.

    A worker thread collects requests for `batch_window_s` (up to `max_batch`) and
    runs them together; each caller gets its own result through a Future.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        sae: SAE | None = None,
        *,
        model_id: str | None = None,
        sae_id: str | None = None,
        batch_window_s: float = 0.002,
        max_batch: int = 16,
        cache_size: int = 256,
    ) -> None:
        self.loaded = loaded
        self.sae = sae
        self.model_id = model_id or loaded.path.name
        self.sae_id = sae_id or (sae.path.name if sae is not None and sae.path else None)
        self.batch_window_s = batch_window_s
        self.max_batch = max_batch
        self._cache_size = cache_size
        self._vectors: OrderedDict[tuple[str, int, str], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self._active: SteeringSnapshot | None = None
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._closed = False

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
                while len(self._vectors) > self._cache_size:
                    self._vectors.popitem(last=False)
        return SteeringSnapshot(layer, vector, profile_id, version, method, datetime.now(timezone.utc))

    def set_active(
        self, profile_id: str, version: int, steering: Mapping[int, float], layer: int | None = None, method: str = "add"
    ) -> SteeringSnapshot:
        """Make a profile version the active one (swapped atomically)."""
        snapshot = self.snapshot(profile_id, version, steering, layer, method)
        with self._lock:
            self._active = snapshot
        return snapshot

    def clear_active(self) -> None:
        """No active profile: requests using the active steering run unsteered."""
        with self._lock:
            self._active = None

    @property
    def active(self) -> SteeringSnapshot | None:
        return self._active

    def with_active(self, request: GenerationRequest) -> GenerationRequest:
        """`request` steered by the currently active snapshot (or by nothing)."""
        return replace(request, steering=self._active)

    # -- generation ------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> Future[GenerationResult]:
        """Queue one request (steered by its own `steering`, or not) for the next batch."""
        validate_request(self.loaded, request)
        future: Future[GenerationResult] = Future()
        with self._lock:
            if self._closed:
                raise EngineClosedError("the engine is closed")
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="steering-engine", daemon=True)
                self._worker.start()
            self._queue.put((request, future))
        return future

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Results for `requests`, batched with whatever else is in flight."""
        futures = [self.submit(request) for request in requests]
        return [future.result() for future in futures]

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Text deltas of one request, decoded in the caller's thread."""
        validate_request(self.loaded, request)
        return stream_generate(self.loaded, request)

    def close(self) -> None:
        """Finish queued work and stop the worker."""
        with self._lock:
            self._closed = True
            worker = self._worker
        if worker is not None:
            self._queue.put(_STOP)
            worker.join()

    def __enter__(self) -> SteeringEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            deadline = time.monotonic() + self.batch_window_s
            stop_after = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop_after = True
                    break
                batch.append(item)
            self._run_batch(batch)
            if stop_after:
                return

    def _run_batch(self, batch: list[tuple[GenerationRequest, Future]]) -> None:
        live = [(request, future) for request, future in batch if future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = generate(self.loaded, [request for request, _ in live])
        except BaseException as exc:  # every caller must hear about a failed batch
            for _, future in live:
                future.set_exception(exc)
            return
        for (_, future), result in zip(live, results):
            future.set_result(result)
