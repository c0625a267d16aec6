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


def steering_json(steering: Mapping[Any, float] | None) -> dict[str, float]:
    if not steering:
        return {}
    return {str(key): float(value) for key, value in sorted(steering.items(), key=lambda kv: int(kv[0]))}


def _get(row: Any, name: str, default: Any = None) -> Any:
    if isinstance(row, Mapping):
        return row.get(name, default)
    return getattr(row, name, default)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def profile_from_state(state: ProfileState, row: Any = None) -> ProfileRead:
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
        execution_count=int(_get(row, "execution_count", 0) or 0) if row is not None else 0,
        last_executed_at=_get(row, "last_executed_at") if row is not None else None,
    )


def profile_fields(row: Any) -> dict[str, Any]:
    steering = steering_json(_get(row, "steering"))
    return {
        "id": str(_get(row, "id")),
        "name": _get(row, "name"),
        "description": _get(row, "description"),
        "model_id": _get(row, "model_id"),
        "sae_id": _get(row, "sae_id"),
        "layer": _get(row, "layer"),
        "steering": steering,
        "feature_count": int(_get(row, "feature_count", len(steering)) or len(steering)),
        "is_active": bool(_get(row, "is_active", False)),
        "created_at": _get(row, "created_at"),
        "updated_at": _get(row, "updated_at"),
        "version": int(_get(row, "version", 1)),
        "tags": list(_get(row, "tags") or []),
        "products": list(_get(row, "products") or []),
        "metadata": dict(_get(row, "metadata") or {}),
        "execution_count": int(_get(row, "execution_count", 0) or 0),
        "last_executed_at": _get(row, "last_executed_at"),
    }


def profile_from_row(row: Any) -> ProfileRead:
    return ProfileRead(**profile_fields(row))


def version_from_row(row: Any) -> VersionRead:
    steering = steering_json(_get(row, "steering"))
    return VersionRead(
        profile_id=str(_get(row, "profile_id")),
        version=int(_get(row, "version")),
        name=_get(row, "name"),
        description=_get(row, "description"),
        model_id=_get(row, "model_id"),
        sae_id=_get(row, "sae_id"),
        layer=_get(row, "layer"),
        steering=steering,
        feature_count=int(_get(row, "feature_count", len(steering)) or len(steering)),
        tags=list(_get(row, "tags") or []),
        products=list(_get(row, "products") or []),
        metadata=dict(_get(row, "metadata") or {}),
        recorded_at=_get(row, "recorded_at") or _get(row, "created_at"),
        actor=_get(row, "actor"),
        reason=_get(row, "reason"),
        event_type=_get(row, "event_type"),
    )


def execution_from_row(row: Any) -> ExecutionRead:
    return ExecutionRead(
        id=str(_get(row, "id")),
        profile_id=str(_get(row, "profile_id")),
        profile_version=int(_get(row, "profile_version")),
        run_id=_get(row, "run_id"),
        seed=_get(row, "seed"),
        entity_count=_get(row, "entity_count"),
        status=_get(row, "status"),
        error_message=_get(row, "error_message"),
        duration_ms=_get(row, "duration_ms"),
        metadata=dict(_get(row, "metadata") or {}),
        executed_at=_get(row, "executed_at") or _get(row, "recorded_at"),
        kind=_get(row, "kind"),
        actor=_get(row, "actor"),
    )


def execution_from_aggregate(execution: Any) -> dict[str, Any]:
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
    }


def spec_from_row(row: Any) -> ExecutionSpec:
    profile = _get(row, "profile") or _get(row, "profile_spec") or {}
    if not isinstance(profile, Mapping):
        profile = {name: _get(profile, name) for name in (*DETAIL_FIELDS, *SPEC_FIELDS)}
    profile = dict(profile)
    if "steering" in profile:
        profile["steering"] = steering_json(profile["steering"])
    return ExecutionSpec(
        execution_id=str(_get(row, "execution_id") or _get(row, "id")),
        profile_id=str(_get(row, "profile_id")),
        profile_version=int(_get(row, "profile_version")),
        profile=profile,
        seed=_get(row, "seed"),
        run_id=_get(row, "run_id"),
        entity_count=_get(row, "entity_count"),
        metadata=dict(_get(row, "metadata") or {}),
    )


def event_from_row(row: Any) -> EventRead:
    data = _get(row, "data") or _get(row, "payload") or {}
    return EventRead(
        position=int(_get(row, "position")),
        type=str(_get(row, "event_type") or _get(row, "type") or _get(row, "topic")),
        originator_id=str(_get(row, "originator_id")),
        originator_version=_get(row, "originator_version"),
        profile_id=_str(_get(row, "profile_id")),
        timestamp=_get(row, "timestamp") or _get(row, "recorded_at"),
        actor=_get(row, "actor"),
        reason=_get(row, "reason"),
        correlation_id=_get(row, "correlation_id"),
        data=dict(data) if isinstance(data, Mapping) else {"value": data},
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
