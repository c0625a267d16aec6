"""Read model ``executions``: every recorded run, by id, by profile (newest first) and by run id.

Deleting a profile with ``delete_executions`` removes its rows here (the events stay in the log); the time of
each execution stays in ``execution_times``, marked deleted then, for the profile as it stood before (``as_of``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from ledger.domainmodel import DELETED_PROFILE, Execution, Profile
from projections import cursors
from projections.fields import json_size, recorded
from projections.ops import Delete, Insert, Op, Update
from projections.projection import ReadModelProjection
from projections.reading import PAGE_BOUNDS, Queries, add_equalities, as_uuid, bounded_page, checked_limit, page_rows
from projections.rows import ExecutionRow, ExecutionSpec, ExecutionTime, Page, RunProfile, Usage
from projections.tables import Index, Table

EXECUTIONS = Table(
    "executions",
    ExecutionRow,
    key=("id",),
    indexes=(
        Index("by_position", "position", unique=True),
        Index("by_profile", "profile_id, position"),
        Index("by_run", "run_id, position"),
    ),
    internal={"record_bytes": int},  # its error message, metadata and details as JSON: a page's bound counts them
    append_only=True,
)
EXECUTION_TIMES = Table(
    "execution_times", ExecutionTime, key=("id",), indexes=(Index("by_profile", "profile_id, recorded_at"),),
    append_only=True,
)


def on_recorded(event: Execution.Recorded) -> list[Op]:
    timed = [] if event.profile_id is None else [Insert(EXECUTION_TIMES, {
        "id": event.originator_id, "profile_id": event.profile_id, "recorded_at": event.timestamp, "deleted_at": None})]
    return [*timed, Insert(EXECUTIONS, {
        "id": event.originator_id,
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
        "record_bytes": json_size([event.error_message, event.metadata, event.details]),
        **recorded(event),
    })]


def on_profile_deleted(event: Profile.Deleted) -> list[Op]:
    if not event.delete_executions:
        return []
    return [Delete(EXECUTIONS, {"profile_id": event.originator_id}),
            Update(EXECUTION_TIMES, {"profile_id": event.originator_id, "deleted_at": None},
                   {"deleted_at": event.timestamp})]


PROJECTION = ReadModelProjection(
    name="executions",
    tables=(EXECUTIONS, EXECUTION_TIMES),
    handlers={Execution.Recorded: on_recorded, Profile.Deleted: on_profile_deleted},
    version=4,
)


class ExecutionQueries(Queries):
    def list_executions(
        self,
        profile_id: UUID | str | None = None,
        run_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[ExecutionRow]:
        """Executions, newest first; of one profile and/or one run id."""
        limit = checked_limit(limit)
        where: list[str] = []
        params: dict[str, Any] = {"limit": limit + 1}
        if not add_equalities(where, params, profile_id, run_id=run_id):
            return Page(items=(), next_cursor=None)
        listing = f"executions:{params.get('profile_id')}:{params.get('run_id')}"
        if cursor is not None:
            (params["before"],) = cursors.decode(cursor, listing, (int,))
            where.append("position < :before")
        sql = f"SELECT {EXECUTIONS.select()}, record_bytes FROM executions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        page = bounded_page(sql + " ORDER BY position DESC LIMIT :limit", "position DESC",
                            {"record_bytes_max": "record_bytes"})
        found, more = page_rows(self._all(f"SELECT * FROM ({page}) p WHERE fits ORDER BY position DESC",
                                          {**params, **PAGE_BOUNDS}), limit)
        rows = self._rows(ExecutionRow, found)
        next_cursor = cursors.encode(listing, [rows[-1].position]) if more else None
        return Page(items=tuple(rows), next_cursor=next_cursor)

    def get_execution(self, execution_id: UUID | str) -> ExecutionRow | None:
        identity = as_uuid(execution_id)
        if identity is None:
            return None
        return self._one(ExecutionRow, f"SELECT {EXECUTIONS.select()} FROM executions WHERE id = :id", {"id": identity})

    def execution_spec(self, execution_id: UUID | str) -> ExecutionSpec | None:
        """The exact spec (of the profile version it ran: for a generation recorded once its profile was deleted, the
        version its details name; none for one run with no profile) and the inputs needed to run it again."""
        identity = as_uuid(execution_id)
        if identity is None:
            return None
        spec = self._one(
            ExecutionSpec,
            "SELECT e.id AS execution_id, e.profile_id, e.profile_version, v.model_id, v.sae_id, v.layer, "
            "v.steering, e.seed, e.entity_count, e.run_id, e.kind, e.details, e.metadata "
            "FROM executions e LEFT JOIN profile_versions v ON v.profile_id = e.profile_id "
            "AND v.version = e.profile_version WHERE e.id = :id",
            {"id": identity},
        )
        ran = spec.details.get(DELETED_PROFILE) if spec is not None and spec.profile_id is None else None
        version = self.get_version(ran["id"], ran["version"]) if ran else None  # type: ignore[attr-defined]
        if version is None:  # a generation run with no profile: no spec but its inputs
            return spec
        return msgspec.structs.replace(spec, model_id=version.model_id, sae_id=version.sae_id, layer=version.layer,
                                       steering=version.steering)

    def usage_until(self, profile_id: UUID, moment: datetime) -> Usage | None:
        """How often a profile had been executed by ``moment``, and when last (executions deleted since count)."""
        return self._one(Usage, "SELECT count(*) AS execution_count, max(recorded_at) AS last_executed_at FROM "
                                "execution_times WHERE profile_id = :profile_id AND recorded_at <= :moment "
                                "AND (deleted_at IS NULL OR deleted_at > :moment)",
                         {"profile_id": profile_id, "moment": moment})

    def profile_for_run(self, run_id: str) -> RunProfile | None:
        """The profile version a run (e.g. a cohort generation) used: its latest execution with that run id."""
        return self._one(
            RunProfile,
            "SELECT run_id, profile_id, profile_version, id AS execution_id, recorded_at FROM executions "
            "WHERE run_id = :run_id ORDER BY position DESC LIMIT 1",
            {"run_id": run_id.strip()},  # stored trimmed
        )
