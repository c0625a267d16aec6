"""What every command shares: settings, the application (opened lazily), and output helpers."""

from __future__ import annotations

import errno
import json
import math
import os
import sys
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import typer

from ledger import strict_json, values
from ledger.application import ProfileLedger
from ledger.domainmodel import CommandContext, acting_as
from ledger.errors import NotFoundError, ValidationError
from ledger.settings import Database, Settings
from projections.dialect import POSTGRES, SQLITE
from projections.reading import PAGE_MAX

NO_LEDGER = ("no ledger at %s: nothing was recorded there (check --database or LEDGER_DATABASE_URL; `ledger db init`, "
             "a server or a command that writes creates one)")


class CliState:
    """The one application (and pool) of a CLI process, and its read side.

    A command that wrote brings the read models up to its writes before the process ends (:meth:`close`), so
    the next query, here or on any server, shows them; a query only reads.
    """

    def __init__(self) -> None:
        self.settings = Settings()  # until the command line is read (:meth:`configure`)
        self._ledger: ProfileLedger | None = None
        self._reads: Any = None
        self._written = 0
        self.writes = False
        """Set by a command that writes (:func:`acting`): it may create the database. A query never does."""

    def configure(self, database: str | None) -> None:
        settings = Settings.from_env()
        if database is not None and not database:  # (not the default: a variable left empty is no value given)
            raise typer.BadParameter("must not be empty", param_hint="'--database'")
        self.settings = replace(settings, database=Database(database)) if database else settings

    @property
    def ledger(self) -> ProfileLedger:
        if self._ledger is None:
            database = self.settings.database
            if not (self.writes or database.is_postgres or _holds_anything(Path(database.sqlite_path))):
                raise NotFoundError(NO_LEDGER % database.display())  # before SQLite makes (or writes to) the file
            self._ledger = ProfileLedger(env=database.eventsourcing_env(pool_size=2, create=self.writes))
            self._ledger.add_listener(self._saw)
            if not (self.writes or holds_log(self._ledger, database)):
                raise NotFoundError(NO_LEDGER % database.display())
            if self.writes:  # with the log's tables, the read models' (a command refused after this leaves both)
                self._make_read_side()
        return self._ledger

    def _make_read_side(self) -> None:
        from projections.schema import create_read_side

        reads = self.reads
        create_read_side(reads.store, self.settings.database, reads.log.events_table)
        self._read_side_made = True

    _read_side_made = False

    @property
    def reads(self) -> Any:
        """The read models (``projections.queries.ReadModel``) over this process's application."""
        if self._reads is None:
            from projections.log import EventLog
            from projections.queries import ReadModel
            from projections.store import open_store

            database = self.settings.database  # its tables are made by what recorded the log, never by a query
            store = open_store(database, datastore=self.ledger.recorder.datastore)
            self._reads = ReadModel(database, store=store, log=EventLog(database, app=self.ledger))
        return self._reads

    def _saw(self, position: int) -> None:
        self._written = max(self._written, position)

    def projection_worker(self, names: list[str] | None = None) -> Any:
        """A projection worker (``projections.runner.ProjectionWorker``) for the read models ``names`` (default: all),
        on this process's application and pool, their tables made first if missing."""
        from projections.runner import ProjectionWorker

        self.writes = True
        reads = self.reads  # (made with the log's tables, unless that failed: a database away as it started)
        if not self._read_side_made:
            self._make_read_side()
        return ProjectionWorker(self.settings.database, names, store=reads.store, log=reads.log)

    def close(self) -> None:
        try:  # apply the log up to this process's last write (each batch is applied once, under its lock)
            if self._written:
                self.projection_worker().catch_up()
                self._written = 0
        except Exception as error:  # noqa: BLE001 - the command itself succeeded: say so, in one line
            typer.echo(f"warning: the read models do not show this command's writes yet ({type(error).__name__}: "
                       f"{error}); a running server or `ledger project` will apply them", err=True)
        finally:
            if self._reads is not None:
                self._reads.close()
                self._reads = None
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None


state = CliState()


def _holds_anything(path: Path) -> bool:
    """Whether an SQLite file is there with something in it (an empty file, which SQLite would make a database of,
    holds no ledger)."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def holds_log(app: ProfileLedger, database: Database) -> bool:
    """Whether the database has the event log's table (read without creating anything)."""
    recorder: Any = app.recorder
    with recorder.datastore.transaction(commit=False) as curs:
        curs.execute((POSTGRES if database.is_postgres else SQLITE).table_exists, (recorder.events_table_name,))
        return bool(curs.fetchone()["found"])


def acting(actor: str, reason: str | None) -> AbstractContextManager[None]:
    """Within it, the changes made are recorded as ``actor``'s, for ``reason`` (a command that writes)."""
    state.writes = True
    return acting_as(CommandContext(actor=actor, reason=(reason or "").strip() or None))


def parse_uuid(value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise ValidationError(f"{value!r} is not a valid {what}") from None


def profile_ref(value: str) -> UUID:
    """The profile a command names: its id, or its name (a deleted profile by the name it last had)."""
    return state.ledger.resolve_profile(value)


def as_text(parameter: typer.CallbackParam, value: Any) -> Any:
    """A filter's text (each of a repeatable one's) must be text: bytes that are not UTF-8 are refused naming the
    option (exit 1), as a stored field's are, rather than failing in the query."""
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(item, str):
            values.text(item, parameter.opts[0] if parameter.opts else parameter.name or "argument")
    return value


def json_error(error: ValueError) -> str:
    """What is wrong with a JSON text: the parser's message, without Python's advice to its programmer (an integer
    of more than 4,300 digits: "use sys.set_int_max_str_digits() to increase the limit")."""
    return str(error).split("; use sys.", 1)[0]


def json_as_written(value: str | None) -> str | None:
    """A JSON option's value must parse (else a usage error: exit 2, with the usage); what it holds is checked by
    the command."""
    if value is not None:
        try:
            strict_json.loads(value)
        except ValueError as error:  # (a JSONDecodeError, or an integer of more digits than Python converts)
            raise typer.BadParameter(f"not valid JSON: {json_error(error)}") from None
        except strict_json.RepeatedKeyError as error:
            raise typer.BadParameter(str(error)) from None
        except RecursionError:
            pass  # JSON, too deep for any field: the command refuses it
    return value


def parse_json(value: str | None, what: str) -> Any:
    if value is None:
        return None
    try:
        return strict_json.loads(value)
    except ValueError as error:
        raise ValidationError(f"{what} is not valid JSON: {json_error(error)}", field=what) from None
    except strict_json.RepeatedKeyError as error:
        raise ValidationError(f"{what}: {error}", field=what) from None
    except RecursionError:
        raise ValidationError(f"{what} is nested too deeply", field=what) from None


class ReaderGoneError(Exception):
    """Standard output's reader went away (``ledger list | head -1``): the command ends quietly with exit 141, as
    shell tools do (128 + SIGPIPE)."""


def _stdout_refusal(error: OSError) -> Exception:
    if isinstance(error, BrokenPipeError):
        return ReaderGoneError()
    return ValidationError(f"cannot write standard output: {error.strerror or error}", field="output")


class CheckedStdout:
    """Standard output as every command writes it, its help included: a write that fails is a refusal (exit 1),
    a pipe whose reader left a quiet end (ReaderGoneError), never an internal fault."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream  # None: closed (``ledger --help >&-``)
        self._dropping = False

    def write(self, text: str) -> int:
        try:
            if self._stream is None:
                raise OSError(errno.EBADF, "standard output is closed")
            return self._stream.write(text)
        except OSError as error:
            if self._dropping:
                return self._drop(len(text))
            raise _stdout_refusal(error) from None

    def flush(self) -> None:
        try:
            if self._stream is not None:
                self._stream.flush()
        except OSError as error:
            if self._dropping:
                self._drop(0)
                return
            raise _stdout_refusal(error) from None

    def drop_what_cannot_be_written(self) -> None:
        """From now on this carries a server's request log, which is no answer a command could fail to give: what
        cannot be written (``ledger serve >&-``, ``>/dev/full``, ``| head -1``) is dropped, and the server serves."""
        self._dropping = True
        if self._stream is None:
            self._stream = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the process's life

    def _drop(self, written: int) -> int:
        """Send what is buffered, and all that follows, to the null device (the last flush at exit included)."""
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, self._stream.fileno())
        os.close(null)
        return written

    def __getattr__(self, name: str) -> Any:
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)


def write_output(output: Path | None, text: str) -> bool:
    """``text`` into ``output`` (True), or onto stdout when there is none or it is ``-`` (False); a file that
    cannot be written is a refusal naming it (exit 1), a pipe whose reader left a quiet end (ReaderGoneError)."""
    to_stdout = output is None or str(output) == "-"
    try:
        if to_stdout:  # (closed: the text would go nowhere, and the command say it had succeeded)
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            output.write_text(text, encoding="utf-8")  # type: ignore[union-attr]
    except OSError as error:
        if to_stdout:
            raise _stdout_refusal(error) from None
        raise ValidationError(f"cannot write {output}: {error.strerror or error}", field="output") from None
    return not to_stdout


def say(text: str = "") -> None:
    """A line of a command's answer on stdout; one that cannot be written (a full disk, a closed descriptor) is a
    refusal (exit 1), never a silent success or an internal fault; a pipe whose reader left ends it quietly."""
    write_output(None, text + "\n")


def json_text(value: Any) -> str:
    """``value`` as indented JSON, as the API encodes it."""
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def emit_json(value: Any) -> None:
    say(json_text(value))


def emit_json_list(items: Iterable[Any]) -> None:
    """Print a list as :func:`emit_json` would, an item at a time as ``items`` yields them: a long one is never
    held whole. An error raised before the first item prints nothing."""
    opening = "[\n  "
    for item in items:
        write_output(None, opening + json_text(item).replace("\n", "\n  "))  # (a JSON string holds no newline)
        opening = ",\n  "
    say("[]" if opening.startswith("[") else "\n]")


_ESCAPED = {code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
            for code in (*range(0x20), *range(0x7f, 0xa0), *range(0x202a, 0x202f), *range(0x2066, 0x206a))}


def plain(text: str) -> str:
    """Free text (a reason, a tag, a run id) on one line of a terminal: control and bidirectional characters shown
    as escapes, so a value cannot draw lines, colours or reordered text of its own (``--json`` keeps it exact)."""
    return text.translate(_ESCAPED)


def shown(value: Any, limit: int | None = None) -> str:
    """A value (a field's, a strength, metadata) on a line of text: as JSON, through :func:`plain`; cut at ``limit``
    characters."""
    if type(value) is int or (type(value) is float and math.isfinite(value)):  # a strength: its JSON is its repr
        return repr(value)
    text = plain(json.dumps(msgspec.to_builtins(value, str_keys=True), ensure_ascii=False))
    return text if limit is None or len(text) <= limit else text[:limit - 1] + "…"


CURSOR = typer.Option(None, "--cursor", help="The next page: the cursor the last one ended with.")


def page_lines(page: Any, line: Callable[[Any], str]) -> list[str]:
    """A page of a listing as text: a line per item, then how to ask for the next page, if there is one."""
    more = [f"(more: the same command with --cursor {page.next_cursor})"] if page.next_cursor else []
    return [*map(line, page.items), *more]


def emit(as_json: bool, document: Any, lines: Iterable[str], empty: str | None = None) -> None:
    """Print ``document`` as JSON, or else each of ``lines`` (and ``empty`` when there are none)."""
    if as_json:
        emit_json(document)
        return
    shown = list(lines)
    if not shown and empty is not None:
        shown = [empty]
    for line in shown:
        say(line)


ACTOR = typer.Option("cli", "--actor", envvar="LEDGER_ACTOR", help="Who is making this change (recorded on events).")
REASON = typer.Option(None, "--reason", help="Why (recorded on events).")
JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")


def limit_option(default: int | None, what: str, most: int | None = PAGE_MAX) -> Any:
    """``--limit``: a usage error (exit status 2, with the usage) outside 1 to ``most``."""
    bounds = f"1 to {most}" if most else "1 or more"
    return typer.Option(default, "--limit", min=1, max=most, help=f"At most this many {what} ({bounds}).")
PROFILE = typer.Argument(..., metavar="NAME_OR_ID", help="The profile's name or id.")
EXPECTED_VERSION = typer.Option(
    None, "--expected-version", min=1,
    help="Refuse if the profile has a newer version (an edit that kept the version is caught by --expected-revision).")
EXPECTED_REVISION = typer.Option(
    None, "--expected-revision", min=1,
    help="Refuse if anything changed the profile since this revision (`revision` in show --json; as the API's ETag).")
