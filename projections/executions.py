"""Read model ``executions``: every recorded run, by id, by profile (newest first) and by run id.

Deleting a profile with ``delete_executions`` removes its rows here (the events stay in the log).
"""

from __future__ import annotations

from ledger.domainmodel import Execution, Profile

from typing import Any

from projections.bulk import MemoryBuild, pick
from projections.fields import audit_params
from projections.projection import ReadModelProjection, Write

TABLES = {
    "executions": (
        """CREATE TABLE IF NOT EXISTS {executions} (
            id {uuid} PRIMARY KEY,
            position {bigint} NOT NULL,
            profile_id {uuid},
            profile_version integer,
            run_id text,
            seed {bigint},
            entity_count {bigint},
            status text NOT NULL,
            error_message text,
            duration_ms {float},
            metadata {json} NOT NULL,
            kind text NOT NULL,
            details {json} NOT NULL,
            replay_of {uuid},
            actor text NOT NULL,
            reason text,
            correlation_id text,
            recorded_at {timestamp} NOT NULL
        )""",
        "CREATE UNIQUE INDEX IF NOT EXISTS {executions}_by_position ON {executions} (position)",
        "CREATE INDEX IF NOT EXISTS {executions}_by_profile ON {executions} (profile_id, position)",
        "CREATE INDEX IF NOT EXISTS {executions}_by_run ON {executions} (run_id, position)",
    ),
}

STATEMENTS = {
    "insert": """INSERT INTO {executions} (id, position, profile_id, profile_version, run_id, seed, entity_count,
            status, error_message, duration_ms, metadata, kind, details, replay_of, actor, reason, correlation_id,
            recorded_at)
        VALUES (:id, :position, :profile_id, :profile_version, :run_id, :seed, :entity_count, :status,
            :error_message, :duration_ms, :metadata, :kind, :details, :replay_of, :actor, :reason, :correlation_id,
            :recorded_at)""",
    "delete_for_profile": "DELETE FROM {executions} WHERE profile_id = :profile_id",
}
# Rebuilds only: a deletion run after every execution has been copied removes those recorded before it.
LATE_STATEMENTS = {
    "delete_rebuilt": "DELETE FROM {executions} WHERE profile_id = :profile_id AND position < :position",
}


def on_recorded(event: Execution.Recorded, position: int) -> list[Write]:
    params = {
        "id": event.originator_id,
        "position": position,
        "profile_id": event.profile_id,
        "profile_version": event.profile_version,
        "run_id": event.run_id,
        "seed": event.seed,
        "entity_count": event.entity_count,
        "status": event.status,
        "error_message": event.error_message,
        "duration_ms": event.duration_ms,
        "metadata": dict(event.metadata or {}),
        "kind": event.kind,
        "details": dict(event.details or {}),
        "replay_of": event.replay_of,
        **audit_params(event),
    }
    return [Write("insert", params)]


def on_profile_deleted(event: Profile.Deleted, position: int) -> list[Write]:
    if not event.delete_executions:
        return []
    # The position is for rebuilds (the statement does not use it): see fold_delete_for_profile.
    return [Write("delete_for_profile", {"profile_id": event.originator_id, "position": position})]


# What each statement does, for rebuilds in memory (projections.bulk).
COLUMNS = (
    "id", "position", "profile_id", "profile_version", "run_id", "seed", "entity_count", "status", "error_message",
    "duration_ms", "metadata", "kind", "details", "replay_of", "actor", "reason", "correlation_id", "recorded_at",
)


def fold_insert(build: MemoryBuild, p: Any) -> None:
    build.seal("executions", pick(p, COLUMNS))  # an execution is recorded once; only a deletion touches it later


def fold_delete_for_profile(build: MemoryBuild, p: Any) -> None:
    """Run on the table after the last copy: ``profile_id = X AND position < P`` is what the delete at P saw."""
    build.late.append(("delete_rebuilt", {"profile_id": p["profile_id"], "position": p["position"]}))


FOLDS = {"insert": fold_insert, "delete_for_profile": fold_delete_for_profile}

PROJECTION = ReadModelProjection(
    name="executions",
    tables=TABLES,
    statements=STATEMENTS,
    handlers={Execution.Recorded: on_recorded, Profile.Deleted: on_profile_deleted},
    folds=FOLDS,
    late_statements=LATE_STATEMENTS,
)
