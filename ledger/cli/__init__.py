"""The ``ledger`` command."""

from __future__ import annotations

import os
import sqlite3
import sys
import traceback
from pathlib import Path

import click
import typer

from ledger.cli import executions, log, profiles, projections, service, steering, tokens, versions
from ledger.cli.commands import Commands
from ledger.cli.context import CheckedStdout, ReaderGoneError, state
from ledger.errors import LedgerError
from ledger.outages import (
    first_line, is_database_unavailable, missing_column, missing_table, out_of_space, refused_for_good, refuses_writes,
)
from steering.errors import SteeringError

app = Commands(
    name="ledger",
    help="An event-sourced ledger of steering profiles for language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def configure(
    database: str = typer.Option(
        None,
        "--database",
        envvar="LEDGER_DATABASE_URL",
        help="Event store: a postgresql:// DSN, or an SQLite path / sqlite:///path (default: ./ledger.sqlite).",
    ),
) -> None:
    state.configure(database)


for module in (profiles, versions, executions, log, tokens, steering, service, projections):
    module.register(app)


# Typer 0.2x carries its own copy of click: its exceptions are typer's, not click's.
ABORTED = (click.exceptions.Abort, typer.Abort)
EXITED = (click.exceptions.Exit, typer.Exit)
USAGE_ERRORS = (click.ClickException, getattr(typer, "TyperException", click.ClickException))
INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL's SQLSTATE for "permission denied"


def _sqlstate(error: BaseException | None) -> str | None:
    """The PostgreSQL SQLSTATE of ``error`` or of the one it was raised from (the library wraps psycopg's)."""
    for _ in range(8):  # a chain of a few links, never a loop
        if error is None or getattr(error, "sqlstate", None) is not None:
            break
        error = error.__cause__ or error.__context__
    return getattr(error, "sqlstate", None)


def main() -> None:
    """Entry point: domain errors become one clear line on stderr and a non-zero exit, never a traceback."""
    sys.stdout = CheckedStdout(sys.stdout)  # type: ignore[assignment]
    try:
        # Without standalone mode, click *returns* the code of a ``typer.Exit`` instead of exiting with it.
        result = app(standalone_mode=False)
        if isinstance(result, int) and not isinstance(result, bool) and result != 0:
            sys.exit(result)
    except LedgerError as error:
        typer.echo(f"error: {error.message}", err=True)
        sys.exit(1)
    except SteeringError as error:  # a model or SAE directory that cannot be used, a feature out of range: input
        typer.echo(f"error: {error}", err=True)
        sys.exit(1)
    except ReaderGoneError:  # nothing more is read: end quietly, as `cmd | head -1` expects of any tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (the final flush must not fail too)
        sys.exit(141)
    except ABORTED:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except EXITED as done:
        sys.exit(done.exit_code)
    except USAGE_ERRORS as error:
        error.show()  # type: ignore[attr-defined]
        sys.exit(error.exit_code)  # type: ignore[attr-defined]
    except Exception as error:  # noqa: BLE001 - an unreachable database or a bug: one line, not a traceback
        if os.environ.get("LEDGER_DEBUG"):
            traceback.print_exc()  # and the exit status it would have had without
        if _sqlstate(error) == INSUFFICIENT_PRIVILEGE:  # the role may not: asking again will not help
            typer.echo(f"error: {state.settings.database.display()} refuses this role: "
                       f"{first_line(error)}", err=True)
            sys.exit(1)
        if type(error) is sqlite3.DatabaseError:  # not a database, or a damaged one: the file given is at fault
            typer.echo(f"error: {state.settings.database.display()} cannot be used: {error}", err=True)
            sys.exit(1)
        if not state.settings.database.is_postgres and _unusable_path(error):  # waiting will not change a path
            typer.echo(f"error: {state.settings.database.display()} cannot be opened or created: {error}", err=True)
            sys.exit(1)
        if (table := missing_table(error)) is not None:  # not an outage: waiting will not bring it back
            typer.echo(f"error: the table {table} is missing from {state.settings.database.display()}: run `ledger db "
                       "init`, which makes it again (rebuilding its read model from the log)", err=True)
            sys.exit(1)
        if (column := missing_column(error)) is not None:  # the read models of another version: not an outage
            typer.echo(f"error: the read models in {state.settings.database.display()} were made by another version "
                       f"of the ledger (no column {column}): run `ledger db init` (or start `ledger serve`), which "
                       "makes them again from the log", err=True)
            sys.exit(1)
        if refuses_writes(error):  # a standby, a read-only file: waiting will not help
            typer.echo(f"error: {state.settings.database.display()} takes no writes ({first_line(error)}): this "
                       "command writes; run it against a database that takes them", err=True)
            sys.exit(1)
        if is_database_unavailable(error):
            database = state.settings.database
            refused = refused_for_good(database.url) if database.is_postgres else None
            if refused is not None:  # a mistyped database or role, a wrong password: retrying will not help
                missing = "does not exist" in refused
                typer.echo(f"error: {'no ledger at' if missing else 'cannot use'} {database.display()}: {refused}",
                           err=True)
                sys.exit(1)
            reason = first_line(error)
            if out_of_space(error):
                typer.echo(f"error: the database has no room to write ({reason}): free space on its disk, then try "
                           "again", err=True)
                sys.exit(75)
            typer.echo(f"error: the database cannot be reached ({reason}); try again once it is back", err=True)
            sys.exit(75)  # sysexits' EX_TEMPFAIL (README, "Command line")
        hint = "" if os.environ.get("LEDGER_DEBUG") else " (set LEDGER_DEBUG=1 for a traceback)"
        typer.echo(f"error: {type(error).__name__}: {error}{hint}", err=True)
        sys.exit(70)  # sysexits' EX_SOFTWARE: a fault of the ledger's own
    finally:
        state.close()


def _unusable_path(error: BaseException) -> bool:
    """An SQLite file that cannot be made where it is asked for (a file where a folder should be, no access)."""
    if "unable to open database file" in str(error):
        return True
    if not isinstance(error, OSError) or error.filename is None:
        return False
    database = Path(state.settings.database.sqlite_path).absolute()
    return Path(error.filename).absolute() in (database, *database.parents)
