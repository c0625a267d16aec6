"""From what the ledger and the read model hold to the response Structs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledger.api.schemas import (
    EventRead,
    ExecutionRead,
    ExecutionSpec,
    FieldChange,
    ProfileDiff,
    ProfileRead,
    SteeringDiff,
    StrengthChange,
    VersionRead,
)
from ledger.application import ProfileState
from ledger.domainmodel import DETAIL_FIELDS, SPEC_FIELDS
from projections.rows import AuditRow, ExecutionRow, ProfileRow, VersionRow
from projections.rows import ExecutionSpec as ExecutionSpecRow


def steering_json(steering: Mapping[Any, float] | None) -> dict[str, float]:
    if not steering:
        return {}
    return {str(key): float(value) for key, value in sorted(steering.items(), key=lambda kv: int(kv[0]))}


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def profile_from_state(state: ProfileState, row: ProfileRow | None = None) -> ProfileRead:
    """A profile as a command left it; usage counts come from the read model's row when there is one."""
    return ProfileRead(
        id=str(state.id),
        name=state.name,
        description=state.description,
        model_id=state.model_id,
        sae_id=state.sae_id,
        layer=state.layer,
        steering=steering_json(state.steering),
        feature_count=len(state.steering),
        is_active=state.is_active,
        created_at=state.created_at,
        updated_at=state.updated_at,
        version=state.version,
        tags=list(state.tags),
        products=list(state.products),
        metadata=dict(state.metadata),
        execution_count=row.execution_count if row is not None else 0,
        last_executed_at=row.last_executed_at if row is not None else None,
    )


def profile_from_row(row: ProfileRow) -> ProfileRead:
    return ProfileRead(
        id=str(row.id),
        name=row.name,
        description=row.description,
        model_id=row.model_id,
        sae_id=row.sae_id,
        layer=row.layer,
        steering=steering_json(row.steering),
        feature_count=row.feature_count,
        is_active=row.is_active,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
        tags=list(row.tags),
        products=list(row.products),
        metadata=dict(row.metadata),
        execution_count=row.execution_count,
        last_executed_at=row.last_executed_at,
    )


def version_from_row(row: VersionRow) -> VersionRead:
    steering = steering_json(row.steering)
    return VersionRead(
        profile_id=str(row.profile_id),
        version=row.version,
        name=row.name,
        description=row.description,
        model_id=row.model_id,
        sae_id=row.sae_id,
        layer=row.layer,
        steering=steering,
        feature_count=row.feature_count,
        tags=list(row.tags),
        products=list(row.products),
        metadata=dict(row.metadata),
        event_type=row.event_type,
        actor=row.actor,
        reason=row.reason,
        correlation_id=row.correlation_id,
        recorded_at=row.recorded_at,
    )


def execution_fields(row: ExecutionRow) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "profile_id": str(row.profile_id),
        "profile_version": row.profile_version,
        "run_id": row.run_id,
        "seed": row.seed,
        "entity_count": row.entity_count,
        "status": row.status,
        "error_message": row.error_message,
        "duration_ms": row.duration_ms,
        "metadata": dict(row.metadata),
        "executed_at": row.recorded_at,
        "kind": row.kind,
        "details": dict(row.details),
        "replay_of": _str(row.replay_of),
        "actor": row.actor,
        "reason": row.reason,
        "correlation_id": row.correlation_id,
    }


def execution_from_row(row: ExecutionRow) -> ExecutionRead:
    return ExecutionRead(**execution_fields(row))


def execution_from_aggregate(execution: Any, context: Any) -> dict[str, Any]:
    return {
        "id": str(execution.id),
        "profile_id": str(execution.profile_id),
        "profile_version": execution.profile_version,
        "run_id": execution.run_id,
        "seed": execution.seed,
        "entity_count": execution.entity_count,
        "status": execution.status,
        "error_message": execution.error_message,
        "duration_ms": execution.duration_ms,
        "metadata": dict(execution.metadata),
        "executed_at": execution.created_on,
        "kind": execution.kind,
        "details": dict(execution.details),
        "replay_of": _str(execution.replay_of),
        "actor": context.actor,
        "reason": context.reason,
        "correlation_id": context.correlation_id,
    }


def spec_from_row(row: ExecutionSpecRow) -> ExecutionSpec:
    return ExecutionSpec(
        execution_id=str(row.execution_id),
        profile_id=str(row.profile_id),
        profile_version=row.profile_version,
        model_id=row.model_id,
        sae_id=row.sae_id,
        layer=row.layer,
        steering=steering_json(row.steering),
        seed=row.seed,
        entity_count=row.entity_count,
        run_id=row.run_id,
        kind=row.kind,
        details=dict(row.details),
        metadata=dict(row.metadata),
    )


def event_from_row(row: AuditRow) -> EventRead:
    return EventRead(
        position=row.position,
        recorded_at=row.recorded_at,
        type=row.event_type,
        aggregate_type=row.aggregate_type,
        originator_id=str(row.originator_id),
        originator_version=row.originator_version,
        profile_id=_str(row.profile_id),
        actor=row.actor,
        reason=row.reason,
        correlation_id=row.correlation_id,
        data=dict(row.payload),
    )


def diff(profile_id: str, before: ProfileState, after: ProfileState) -> ProfileDiff:
    changes = [
        FieldChange(field=name, before=getattr(before, name), after=getattr(after, name))
        for name in (*DETAIL_FIELDS, *SPEC_FIELDS)
        if name != "steering" and getattr(before, name) != getattr(after, name)
    ]
    old, new = before.steering, after.steering
    steering = SteeringDiff(
        added={str(k): new[k] for k in sorted(new.keys() - old.keys())},
        removed={str(k): old[k] for k in sorted(old.keys() - new.keys())},
        changed={
            str(k): StrengthChange(before=old[k], after=new[k])
            for k in sorted(old.keys() & new.keys())
            if old[k] != new[k]
        },
    )
    return ProfileDiff(
        profile_id=profile_id, from_version=before.version, to_version=after.version, changes=changes, steering=steering
    )
