"""The steering side of a server process: the engine, the generation service, and the projector that keeps
the engine's active steering in sync with the log (in a thread, woken by this process's saves and NOTIFY)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ledger.application import ProfileLedger
from ledger.settings import Settings
from ledger.states import ProfileState

T = TypeVar("T")

log = logging.getLogger("ledger.api")
RECORD_SETTLE_SECONDS = 10.0  # at shutdown, records of served generations still under way are waited for this long


def _loaded(load: Callable[[], T], path: str, refusal: type[Exception]) -> T:
    """What ``load`` loads from ``path``; a file it cannot read (a cut-off safetensors file, a file where a directory
    belongs) refuses the model or SAE in one line (``refusal``, a SteeringError), as a missing one is refused, not as
    a fault of the server's own."""
    from steering.errors import SteeringError

    try:
        return load()
    except SteeringError:
        raise
    except Exception as error:  # noqa: BLE001 - torch, safetensors and transformers each raise their own
        said = str(error).strip().splitlines()
        raise refusal(f"{path} cannot be loaded: {type(error).__name__}{': ' + said[0] if said else ''}") from error


def load_engine(settings: Settings) -> Any:
    """Load the configured model (and SAE) into a SteeringEngine; None when no model is configured."""
    if not settings.model:
        return None
    from steering.engine import SteeringEngine
    from steering.errors import ModelFormatError, SAEFormatError
    from steering.models import load_model
    from steering.sae import load_sae

    loaded = _loaded(lambda: load_model(settings.model, device=settings.device, dtype=settings.dtype), settings.model,
                     ModelFormatError)
    sae = _loaded(lambda: load_sae(settings.sae), settings.sae, SAEFormatError) if settings.sae else None
    log.info("model %s loaded on %s (%s); SAE %s", settings.model, loaded.device, loaded.dtype, settings.sae or "none")
    return SteeringEngine(
        loaded, sae, max_batch=settings.max_batch, max_queue=settings.max_queue, step_tokens=settings.step_tokens
    )


class SteeringRuntime:
    def __init__(self, settings: Settings, ledger: ProfileLedger, engine: Any, notifications: Any = None) -> None:
        from projections.follow import LogFollower
        from projections.log import EventLog
        from steering.projector import SteeringProjector
        from steering.runs import GenerationService

        self.engine = engine
        self.generation = GenerationService(ledger, engine)
        self.projector = SteeringProjector(engine, self.generation.spec_at)
        self.generation.projector = self.projector
        self.follower = LogFollower(settings.database, self.projector, log=EventLog(settings.database, app=ledger),
                                    notifications=notifications)
        self._ledger = ledger
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start following the log (called in the app's lifespan, on its event loop)."""
        position = self.follower.head()
        slot = self._ledger.active_slot()  # None until a profile is first activated
        self.projector.bootstrap(position, getattr(slot, "profile_id", None), getattr(slot, "pinned_version", None))
        self._ledger.add_listener(self.follower.wake)
        self._thread = threading.Thread(target=self.follower.run, args=(self._stop,), daemon=True, name="steering-projector")
        self._thread.start()

    def compatibility_warnings(self, profile: ProfileState) -> list[str]:
        """Seed 000's check on activation: warnings for another model/SAE/layer, 422 for impossible ones."""
        from steering.projector import ProfileSpec

        return self.generation.compatibility_warnings(
            ProfileSpec(profile.id, profile.version, profile.steering, profile.layer, profile.model_id, profile.sae_id)
        )

    def stop(self) -> None:
        self._stop.set()
        self.follower.wake()
        if self._thread is not None:
            self._thread.join(5)
        self.follower.close()
        self.engine.drain(0.0)  # what still runs now (the server's grace is over, or a second signal cut it) is cut
        self.engine.close()
        self.generation.settle(RECORD_SETTLE_SECONDS)  # what was served reaches the log before the ledger closes
