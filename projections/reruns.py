"""The re-run spec of a run (e.g. a cohort generation): what HealthSim needs to produce it again, by run id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class RerunSpec:
    """The profile version a run used, with the run's seed and entity count written in, and its products."""

    run_id: str
    execution_id: UUID
    profile_id: UUID
    profile_version: int
    name: str
    model_id: str | None
    sae_id: str | None
    layer: int | None
    steering: dict[str, float]
    products: tuple[str, ...]
    tags: tuple[str, ...]
    seed: int | None
    entity_count: int | None
    recorded_at: datetime


def rerun_spec(reads: Any, run_id: str) -> RerunSpec | None:
    """From the read model (``projections.queries.ReadModel``): the latest execution recorded with ``run_id``
    and its profile version; None when no execution of a profile carries that run id."""
    found = reads.profile_for_run(run_id)
    if found is None or found.profile_id is None:
        return None
    execution = reads.get_execution(found.execution_id)
    version = reads.get_version(found.profile_id, found.profile_version)
    if execution is None or version is None:
        return None
    return RerunSpec(
        run_id=run_id,
        execution_id=found.execution_id,
        profile_id=found.profile_id,
        profile_version=found.profile_version,
        name=version.name,
        model_id=version.model_id,
        sae_id=version.sae_id,
        layer=version.layer,
        steering=dict(version.steering),
        products=tuple(version.products),
        tags=tuple(version.tags),
        seed=execution.seed,
        entity_count=execution.entity_count,
        recorded_at=found.recorded_at,
    )
