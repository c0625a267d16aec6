"""Executions (runs of a profile version): recorded under a profile, read by id, found by run id."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED

from ledger.api.commands import COMMAND_HEADERS, LOCATION_DOC, position_headers, run_command
from ledger.api.deps import LOOKUP, Cursor, Limit, refuse_nul, with_reason
from ledger.api.references import ProfileRef, profile_not_found
from ledger.api.errors import INVALID, NOT_FOUND, TOO_LARGE, responses
from ledger.api.schemas import (
    ExecutionList,
    ExecutionRead,
    ExecutionRecorded,
    RecordExecution,
    RunProfile,
)
from ledger.application import ProfileLedger
from ledger.domainmodel import CommandContext
from ledger.errors import ExecutionNotFoundError, RunNotFoundError
from ledger.states import convert
from projections.reruns import RunSpec, rerun_spec
from projections.rows import ExecutionSpec


class ProfileExecutionController(Controller):
    path = "/api/profiles/{profile_id:str}/executions"
    tags = ["executions"]

    @post(
        "/",
        summary="Record a run of a profile version",
        sync_to_thread=True,
        status_code=HTTP_201_CREATED,
        response_headers=[*COMMAND_HEADERS, LOCATION_DOC],
        responses=responses(NOT_FOUND, INVALID, TOO_LARGE),
    )
    def record_execution(
        self,
        profile_id: ProfileRef,
        data: JSONBody[RecordExecution],
        ledger: NamedDependency[ProfileLedger],
        context: NamedDependency[CommandContext],
    ) -> Response[ExecutionRecorded]:
        pid = ledger.resolve_profile(profile_id)
        details = msgspec.structs.asdict(data)
        details.pop("reason")
        recorded_context = with_reason(context, data)
        outcome = run_command(recorded_context, lambda: ledger.record_execution(pid, **details))
        execution = ledger.get_execution(outcome.execution_id)
        body = convert(
            execution, ExecutionRecorded, recorded_at=execution.created_on, actor=recorded_context.actor,
            reason=recorded_context.reason, correlation_id=recorded_context.correlation_id, position=outcome.position,
        )
        headers = {**position_headers(outcome.position), "Location": f"/api/executions/{execution.id}"}
        return Response(body, status_code=HTTP_201_CREATED, headers=headers)

    @get("/", summary="The executions of a profile, newest first", **LOOKUP)
    def list_executions(
        self,
        profile_id: ProfileRef,
        reads: NamedDependency[Any],
        ledger: NamedDependency[ProfileLedger],
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> ExecutionList:
        pid = ledger.resolve_profile(profile_id)
        page = reads.list_executions(profile_id=pid, limit=limit, cursor=cursor)
        if not page.items and cursor is None and reads.get_version(pid, 1) is None:  # a deleted one's are history
            raise profile_not_found(pid)
        return convert(page, ExecutionList, executions=page.items)


class ExecutionController(Controller):
    path = "/api/executions"
    tags = ["executions"]

    @get("/{execution_id:uuid}", summary="One execution", **LOOKUP)
    def get_execution(self, execution_id: FromPath[UUID], reads: NamedDependency[Any]) -> ExecutionRead:
        return convert(execution_found(reads.get_execution(execution_id), execution_id), ExecutionRead)

    @get("/{execution_id:uuid}/spec", summary="What re-running an execution needs: the spec and the seed", **LOOKUP)
    def get_execution_spec(self, execution_id: FromPath[UUID], reads: NamedDependency[Any]) -> ExecutionSpec:
        return execution_found(reads.execution_spec(execution_id), execution_id)


def execution_found(row: Any, execution_id: UUID) -> Any:
    """A read-side row of the execution ``execution_id`` (or its spec); 404 when there is none."""
    if row is None:
        raise ExecutionNotFoundError(f"execution {execution_id} not found", execution_id=str(execution_id))
    return row


class RunController(Controller):
    path = "/api/runs"
    tags = ["executions"]

    @get("/{run_id:str}/spec", summary="What re-running a run needs: its profile version's spec, seed, entity "
         "count and products", **LOOKUP)
    def spec_for_run(self, run_id: FromPath[str], reads: NamedDependency[Any]) -> RunSpec:
        refuse_nul(run_id=run_id)
        spec = rerun_spec(reads, run_id)
        if spec is None:
            raise RunNotFoundError.of(run_id, of_a_profile=True)
        return spec

    @get("/{run_id:str}/executions", summary="Every execution recorded with a run id, newest first", **LOOKUP)
    def list_run_executions(self, run_id: FromPath[str], reads: NamedDependency[Any], limit: Limit = 50,
                            cursor: Cursor = None) -> ExecutionList:
        refuse_nul(run_id=run_id)
        page = reads.list_executions(run_id=run_id, limit=limit, cursor=cursor)
        if not page.items and cursor is None:
            raise RunNotFoundError.of(run_id)
        return convert(page, ExecutionList, executions=page.items)

    @get("/{run_id:str}/profile", summary="The profile a run was made from", **LOOKUP)
    def profile_for_run(self, run_id: FromPath[str], reads: NamedDependency[Any]) -> RunProfile:
        refuse_nul(run_id=run_id)
        found = reads.profile_for_run(run_id)
        if found is None:
            raise RunNotFoundError.of(run_id)
        version = reads.get_version(found.profile_id, found.profile_version)
        return convert(found, RunProfile, version=version, profile=reads.get_profile(found.profile_id))
