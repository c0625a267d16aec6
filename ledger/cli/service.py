"""Service commands: serve (the REST API), project (a projection worker), rebuild (read models from 0)."""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from ledger.cli.commands import Commands
from ledger.cli.context import JSON, CheckedStdout, emit, state
from ledger.cli.projections import applied_positions


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
        port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
        projections: bool = typer.Option(
            True, "--projections/--no-projections",
            help="Run the projection workers in this process (the default: servers on one database then catch each "
            "other up). Off, only a `ledger project` elsewhere applies what a busy read model left (commands project "
            "inline as a rule): while none runs and a read model falls behind, commands are answered pending and "
            "/ready is 503.",
        ),
        auth: Optional[bool] = typer.Option(
            None, "--auth/--no-auth",
            help="Ask every request for a bearer token (default: on, or LEDGER_AUTH). --no-auth is open mode: "
            "anyone may do anything and X-Actor names the actor; for local development only.",
            show_default=False,
        ),
        model: Optional[Path] = typer.Option(
            None, "--model", help="Model directory to generate with (default: LEDGER_MODEL, else the fetched default "
            "model if present)."
        ),
        sae: Optional[Path] = typer.Option(
            None, "--sae", help="SAE directory (default: LEDGER_SAE, else the trained default SAE if present)."
        ),
        no_model: bool = typer.Option(False, "--no-model", help="Serve the ledger only: no generation."),
        access_log: bool = typer.Option(
            True, "--access-log/--no-access-log", help="Log a line per request (costs about a tenth of a cached read)."
        ),
    ) -> None:
        """Serve the REST API (and, by default, keep the read models up to date and load the model)."""
        from ledger.api.server import listening_sockets, serve as serve_api
        from ledger.cli.steering import model_dir, model_path, sae_path
        from projections.schema import init_database

        if no_model and (model is not None or sae is not None):
            raise typer.BadParameter("serves no model: give it without --model and --sae", param_hint="--no-model")
        bound = listening_sockets(host, port)  # first: an address it cannot take is said at once, and makes nothing
        settings = state.settings if auth is None else replace(state.settings, auth=auth)
        if no_model:
            settings = replace(settings, model=None, sae=None)
        else:
            named = model is not None or bool(state.settings.model)  # then it must be there; the default may not
            chosen_model, found_sae = model_path(model) if named else model_dir(None), sae_path(sae)
            settings = replace(settings, model=str(chosen_model) if chosen_model.exists() else None,
                               sae=str(found_sae) if found_sae else None)
            if settings.model is None:
                typer.echo(f"no model at {chosen_model}: serving the ledger without generation "
                           "(run `ledger models fetch`)", err=True)
            else:  # what it cannot use (no model there, a device or dtype): one line and exit 1 now, not a traceback
                from steering.models import check_model_dir, compute_device, compute_dtype

                compute_device(settings.device), compute_dtype(settings.dtype), check_model_dir(chosen_model)
        init_database(settings.database)  # first, so a database it cannot use is one line and an exit status
        if isinstance(sys.stdout, CheckedStdout):
            sys.stdout.drop_what_cannot_be_written()  # its request log: lost where it cannot go, and it serves
        serve_api(settings, host=host, port=port, run_projections=projections, access_log=access_log, bound=bound)

    @app.command()
    def project(
        names: Optional[list[str]] = typer.Argument(None, help="Read models to maintain (default: all)."),
    ) -> None:
        """Run a projection worker: follow the log and keep the read models up to date until SIGTERM/SIGINT."""
        from ledger.outages import refused_for_good
        from projections.runner import run_projections, when_reachable

        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        database = state.settings.database
        refused = (lambda: refused_for_good(database.url)) if database.is_postgres else (lambda: None)
        worker = when_reachable(lambda: state.projection_worker(names or None), stop, refused)  # (tables made first)
        if worker is not None:
            typer.echo(f"projection worker following {database.display()}", err=True)
            run_projections(database, stop, worker=worker)

    db = Commands(help="The database: create its tables.", no_args_is_help=True)
    app.add_typer(db, name="db")

    @db.command("init")
    def init() -> None:
        """Create every table the ledger needs (event store, tracking, read models) if missing; safe to repeat."""
        from projections.schema import init_database

        init_database(state.settings.database)
        typer.echo(f"initialised {state.settings.database.display()}", err=True)

    @app.command()
    def rebuild(
        names: Optional[list[str]] = typer.Argument(None, help="Read models to rebuild (default: all)."),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
        as_json: bool = JSON,
    ) -> None:
        """Rebuild read models from position 0 into new tables and swap them in; queries keep working meanwhile.
        Exits 1 if an event could not be applied (it is parked: `ledger projections` lists it), or if a stream
        has an event removed from the log (nothing is swapped in; `ledger verify` says where)."""
        from projections.runner import rebuild as rebuild_read_models
        from projections.schema import hold_rebuild_lock

        state.ledger  # a rebuild where nothing was recorded (a mistyped location) makes no database
        release = hold_rebuild_lock(state.settings.database)  # one rebuild at a time, across every process
        try:
            applied = applied_positions()
            positions = rebuild_read_models(state.settings.database, names or None, progress=progress)
        finally:
            release()
        forgotten = {name: applied[name] for name, position in positions.items() if applied.get(name, 0) > position}
        if forgotten:  # the log lost its tail (see `ledger verify`): what the read models showed of it is gone now
            reached = ", ".join(f"{name} up to position {position}" for name, position in forgotten.items())
            typer.echo(f"warning: the read models had applied events past the log's end ({reached}): they were "
                       "removed from the log, and the rebuilt read models no longer show them", err=True)
        emit(as_json, positions, (f"{name}: rebuilt up to position {position}" for name, position in positions.items()))
        parked = [event for event in state.reads.store.parked() if event.projection in positions]
        if parked:
            typer.echo(f"error: {len(parked)} event(s) could not be applied and are parked (see `ledger projections`)",
                       err=True)
            raise typer.Exit(1)
