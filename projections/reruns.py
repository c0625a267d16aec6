"""The re-run spec of a run (e.g. a cohort generation): what HealthSim needs to produce it again, by run id."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec


class RunSpec(msgspec.Struct, kw_only=True):
    """Everything needed to run a run (e.g. a cohort) again: its profile version's spec, with the run's seed and
    entity count written in, and the products it is for."""

    run_id: str
    execution_id: UUID
    profile_id: UUID
    profile_version: int
    name: str
    model_id: str | None
    sae_id: str | None
    layer: int | None
    steering: dict[int, float]
    products: list[str]
    tags: list[str]
    seed: int | None
    entity_count: int | None
    recorded_at: datetime
    status: str
    """How the execution this spec is taken from ended (``failed``: a re-run re-runs an attempt that failed)."""
    error_message: str | None = None


def rerun_spec(reads: Any, run_id: str) -> RunSpec | None:
    """From the read model (``projections.queries.ReadModel``): the latest execution recorded with ``run_id``
    and its profile version; None when no execution of a profile carries that run id."""
    found = reads.profile_for_run(run_id)
    if found is None or found.profile_id is None:
        return None
    execution = reads.get_execution(found.execution_id)
    version = reads.get_version(found.profile_id, found.profile_version)
    if execution is None or version is None:
        return None
    spec = {field: getattr(version, field) for field in ("name", "model_id", "sae_id", "layer", "steering",
                                                           "products", "tags")}
    return msgspec.convert({
        **spec, "run_id": execution.run_id, "execution_id": found.execution_id, "profile_id": found.profile_id,
        "profile_version": found.profile_version, "seed": execution.seed, "entity_count": execution.entity_count,
        "recorded_at": found.recorded_at, "status": execution.status, "error_message": execution.error_message,
    }, RunSpec, strict=False)
