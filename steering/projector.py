"""The steering projector: follows the event log and keeps the engine's active steering in sync.

Activation installs the profile version's vector, a revision of the active (unpinned) profile replaces it,
deactivation removes it. It records the log position it has applied. It is a pure consumer of events: the
loop that feeds it lives with the other log followers (``projections.follow``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from ledger import values
from ledger.domainmodel import ActiveSlot, Profile

from .engine import SteeringEngine
from .errors import SteeringError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfileSpec:
    """What the hook needs from one profile version."""

    profile_id: UUID
    version: int
    steering: Mapping[int, float]
    layer: int | None
    model_id: str | None = None
    sae_id: str | None = None


@dataclass(frozen=True)
class SteeringStatus:
    profile_id: UUID | None
    version: int | None
    pinned: bool
    position: int
    applied_at: datetime | None
    layer: int | None
    feature_count: int
    error: str | None


SpecAt = Callable[[UUID, int | None], ProfileSpec]


class SteeringProjector:
    def __init__(self, engine: SteeringEngine, spec_at: SpecAt) -> None:
        self.engine = engine
        self.spec_at = spec_at
        self._profile_id: UUID | None = None
        self._pinned: int | None = None
        self._spec: ProfileSpec | None = None
        self._position = 0
        self._applied_at: datetime | None = None
        self._error: str | None = None
        self._changed = threading.Condition()

    # -- feeding -------------------------------------------------------------------------------------
    def bootstrap(self, position: int, profile_id: UUID | None, pinned_version: int | None) -> None:
        """Start from the active slot as it stood at (or after) ``position``."""
        spec = None if profile_id is None else self.spec_at(profile_id, pinned_version)
        self._install(position, profile_id, pinned_version, spec)

    def apply(self, position: int, event: Any) -> None:
        if isinstance(event, ActiveSlot.Activated):
            self._install(position, event.profile_id, event.pinned_version,
                          self.spec_at(event.profile_id, event.pinned_version or event.version))
        elif isinstance(event, ActiveSlot.Deactivated):
            self._install(position, None, None, None)
        elif isinstance(event, Profile.SpecRevised) and self._follows(event.originator_id):
            spec = ProfileSpec(event.originator_id, event.version, values.steering_from_json(event.steering),
                               event.layer, event.model_id, event.sae_id)
            self._install(position, event.originator_id, None, spec)
        elif isinstance(event, Profile.DetailsRevised) and self._follows(event.originator_id):
            assert self._spec is not None
            self._install(position, event.originator_id, None, replace(self._spec, version=event.version))
        else:
            self._advance(position)

    # -- reading -------------------------------------------------------------------------------------
    @property
    def position(self) -> int:
        return self._position

    def current_spec(self) -> ProfileSpec | None:
        """The active profile version as last applied (None when no profile is active)."""
        return self._spec

    def status(self) -> SteeringStatus:
        with self._changed:
            spec = self._spec
            return SteeringStatus(
                profile_id=self._profile_id,
                version=spec.version if spec else None,
                pinned=self._pinned is not None,
                position=self._position,
                applied_at=self._applied_at,
                layer=spec.layer if spec else None,
                feature_count=len(spec.steering) if spec else 0,
                error=self._error,
            )

    def wait_for(self, position: int, timeout: float) -> bool:
        """Block until the projector has applied ``position`` (or the timeout passes)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._position >= position, timeout)

    # -- internals -----------------------------------------------------------------------------------
    def _follows(self, profile_id: UUID) -> bool:
        return self._profile_id == profile_id and self._pinned is None

    def _install(self, position: int, profile_id: UUID | None, pinned: int | None, spec: ProfileSpec | None) -> None:
        """Make ``spec`` the engine's active steering (None, or no steering: none) as of ``position``."""
        error = None
        try:
            if spec is not None and spec.steering:
                self.engine.set_active(str(profile_id), spec.version, spec.steering, spec.layer)
            else:
                self.engine.clear_active()
        except SteeringError as problem:
            error = f"profile {profile_id} v{spec.version} cannot be applied: {problem}"
            logger.warning("steering projector: %s; requests that would use it are refused (profile_incompatible) "
                           "until another version or profile is active", error)
            self.engine.clear_active()
        with self._changed:
            self._profile_id, self._pinned, self._spec, self._error = profile_id, pinned, spec, error
            self._position, self._applied_at = max(self._position, position), datetime.now(timezone.utc)
            self._changed.notify_all()

    def _advance(self, position: int) -> None:
        with self._changed:
            self._position = max(self._position, position)
            self._changed.notify_all()
