"""Execution commands: record-execution, executions, spec (a run's re-run spec), run (a run's profile)."""

from __future__ import annotations

from typing import Any, Optional

import msgspec
import typer

from ledger.cli.context import (
    ACTOR, CURSOR, JSON, PROFILE, REASON, acting, as_text, emit, emit_json, json_as_written, limit_option, page_lines,
    parse_json, plain, profile_ref, say, shown, state,
)
from ledger.errors import RunNotFoundError

RUN_ID = typer.Argument(..., metavar="RUN_ID", help="The run id (e.g. a cohort id).", callback=as_text)


def execution_line(row: Any) -> str:
    """An execution in ``ledger executions``: when, which profile version, which run, seed and status."""
    profile = f"{row.profile_id} v{row.profile_version}" if row.profile_id is not None else "-"
    return (f"{row.id}  {row.recorded_at.isoformat()}  profile={profile}  run={plain(row.run_id or '-')}"
            f"  seed={_or_dash(row.seed)}  status={row.status}")


def _or_dash(value: Any) -> Any:
    return "-" if value is None else value


def register(app: typer.Typer) -> None:
    @app.command("record-execution")
    def record_execution(
        profile_id: str = PROFILE,
        version: Optional[int] = typer.Option(
            None, "--version", min=1, help="Profile version run (default: the one in force, as reads show it)."),
        run_id: Optional[str] = typer.Option(None, "--run-id", help="E.g. the cohort id the run produced."),
        seed: Optional[int] = typer.Option(None, "--seed"),
        entity_count: Optional[int] = typer.Option(None, "--entity-count"),
        status: str = typer.Option("success", "--status", help="success, failed or partial."),
        error_message: Optional[str] = typer.Option(None, "--error-message"),
        duration_ms: Optional[float] = typer.Option(None, "--duration-ms"),
        metadata: Optional[str] = typer.Option(None, "--metadata", help="A JSON object.", callback=json_as_written),
        actor: str = ACTOR,
        reason: Optional[str] = REASON,
        as_json: bool = JSON,
    ) -> None:
        """Record an external run of a profile version (e.g. a cohort generation)."""
        with acting(actor, reason):
            outcome = state.ledger.record_execution(
                profile_ref(profile_id), version=version, run_id=run_id, seed=seed, entity_count=entity_count,
                status=status, error_message=error_message, duration_ms=duration_ms,
                metadata=parse_json(metadata, "metadata"),
            )
        if as_json:
            emit_json(outcome)
        else:
            say(
                f"recorded execution {outcome.execution_id} of profile {outcome.profile_id} "
                f"v{outcome.profile_version} at position {outcome.position}"
            )

    @app.command()
    def executions(
        profile_id: Optional[str] = typer.Argument(
            None, metavar="NAME_OR_ID", help="Only this profile's executions (its name or id)."
        ),
        run_id: Optional[str] = typer.Option(None, "--run-id", help="Only executions of this run.", callback=as_text),
        limit: int = limit_option(50, "executions"),
        cursor: Optional[str] = CURSOR,
        as_json: bool = JSON,
    ) -> None:
        """List executions, newest first, from the read model, a page at a time (an unknown run id: exit 1, as
        the API's 404)."""
        from ledger.api.schemas import ExecutionList  # the API's answer: the same fields, named as it names them

        page = state.reads.list_executions(
            profile_id=profile_ref(profile_id) if profile_id else None, run_id=run_id, limit=limit, cursor=cursor
        )
        if run_id is not None and not page.items and cursor is None:
            raise RunNotFoundError.of(run_id)
        listed = msgspec.convert({"executions": page.items, "next_cursor": page.next_cursor}, ExecutionList,
                                 from_attributes=True)
        emit(as_json, listed, page_lines(page, execution_line), "no executions")

    @app.command()
    def spec(run_id: str = RUN_ID, as_json: bool = JSON) -> None:
        """What re-running a run needs: its profile version's spec, seed, entity count and products."""
        from projections.reruns import rerun_spec

        found = rerun_spec(state.reads, run_id)
        if found is None:
            raise RunNotFoundError.of(run_id, of_a_profile=True)
        if as_json:
            emit_json(found)
            return
        say(f"run {plain(found.run_id)}: profile {found.name} (id {found.profile_id}) v{found.profile_version}")
        say(f"  model: {plain(found.model_id or '-')}   sae: {plain(found.sae_id or '-')}   layer: "
                   f"{'-' if found.layer is None else found.layer}")
        say(f"  steering: {shown(found.steering) if found.steering else '-'}")
        say(f"  seed: {_or_dash(found.seed)}   entity count: {_or_dash(found.entity_count)}   products: "
                   f"{plain(', '.join(found.products)) or '-'}")
        if found.status != "success":  # the latest execution of the run, which this spec is taken from
            say(f"  status: {found.status}" + (f" ({plain(found.error_message)})" if found.error_message else ""))

    @app.command()
    def run(run_id: str = RUN_ID, as_json: bool = JSON) -> None:
        """The profile (and version) a run was made from."""
        reads = state.reads
        found = reads.profile_for_run(run_id)
        if found is None:
            raise RunNotFoundError.of(run_id)
        current = reads.get_profile(found.profile_id) if found.profile_id is not None else None
        if as_json:
            emit_json({"run": found, "profile": current})
            return
        ran = reads.get_version(found.profile_id, found.profile_version) if found.profile_id is not None else None
        name = current.name if current is not None else f"{ran.name} (deleted)" if ran is not None else "(none)"
        say(
            f"run {found.run_id}: profile {name} (id {found.profile_id}) v{found.profile_version}, "
            f"execution {found.execution_id} at {found.recorded_at.isoformat()}"
        )
