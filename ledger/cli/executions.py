"""Execution commands: record-execution, executions."""

from __future__ import annotations

from typing import Optional

import typer

from ledger.cli.context import ACTOR, JSON, REASON, acting, emit_json, parse_json, parse_uuid, state


def register(app: typer.Typer) -> None:
    @app.command("record-execution")
    def record_execution(
        profile_id: str = typer.Argument(...),
        version: Optional[int] = typer.Option(None, "--version", help="Profile version run (default: current)."),
        run_id: Optional[str] = typer.Option(None, "--run-id", help="E.g. the cohort id the run produced."),
        seed: Optional[int] = typer.Option(None, "--seed"),
        entity_count: Optional[int] = typer.Option(None, "--entity-count"),
        status: str = typer.Option("success", "--status", help="success, failed or partial."),
        error_message: Optional[str] = typer.Option(None, "--error-message"),
        duration_ms: Optional[float] = typer.Option(None, "--duration-ms"),
        metadata: Optional[str] = typer.Option(None, "--metadata", help="A JSON object."),
        actor: str = ACTOR,
        reason: Optional[str] = REASON,
        as_json: bool = JSON,
    ) -> None:
        """Record an external run of a profile version (e.g. a cohort generation)."""
        with acting(actor, reason):
            outcome = state.ledger.record_execution(
                parse_uuid(profile_id), version=version, run_id=run_id, seed=seed, entity_count=entity_count,
                status=status, error_message=error_message, duration_ms=duration_ms,
                metadata=parse_json(metadata, "metadata"),
            )
        if as_json:
            emit_json(outcome)
        else:
            typer.echo(
                f"recorded execution {outcome.execution_id} of profile {outcome.profile_id} "
                f"v{outcome.profile_version} at position {outcome.position}"
            )

    @app.command()
    def executions(
        profile_id: Optional[str] = typer.Argument(None, help="Only this profile's executions."),
        run_id: Optional[str] = typer.Option(None, "--run-id", help="Only executions of this run."),
        limit: int = typer.Option(50, "--limit"),
        as_json: bool = JSON,
    ) -> None:
        """List executions, newest first, from the read model."""
        from ledger.cli.reading import read_model

        page = read_model().list_executions(
            profile_id=parse_uuid(profile_id) if profile_id else None, run_id=run_id, limit=limit
        )
        if as_json:
            emit_json({"executions": page.items, "next_cursor": page.next_cursor})
            return
        for row in page.items:
            typer.echo(
                f"{row.id}  {row.recorded_at.isoformat()}  profile={row.profile_id} v{row.profile_version}"
                f"  run={row.run_id or '-'}  seed={row.seed}  status={row.status}"
            )
        if not page.items:
            typer.echo("no executions")
