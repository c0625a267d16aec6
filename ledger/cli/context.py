"""What every command shares: settings, the application (opened lazily), and output helpers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass, replace
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import typer

from ledger.application import ProfileLedger
from ledger.domainmodel import CommandContext, acting_as
from ledger.errors import ValidationError
from ledger.settings import Database, Settings


class CliState:
    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self._ledger: ProfileLedger | None = None

    def configure(self, database: str | None) -> None:
        settings = Settings.from_env()
        self.settings = replace(settings, database=Database(database)) if database else settings

    @property
    def ledger(self) -> ProfileLedger:
        if self._ledger is None:
            self._ledger = ProfileLedger(env=self.settings.database.eventsourcing_env(pool_size=2))
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None


state = CliState()


@contextmanager
def acting(actor: str, reason: str | None) -> Iterator[None]:
    with acting_as(CommandContext(actor=actor, reason=reason)):
        yield


def parse_uuid(value: str, what: str = "profile id") -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise ValidationError(f"{value!r} is not a valid {what}") from None


def profile_ref(value: str) -> UUID:
    """The profile a command names: its id, or its name (a deleted profile by the name it last had)."""
    return state.ledger.resolve_profile(value)


def parse_time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{value!r} is not an ISO 8601 time", field="as_of") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def parse_json(value: str | None, what: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise ValidationError(f"{what} is not valid JSON: {error}", field=what) from None


def to_jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (UUID, datetime)):
        return str(value) if isinstance(value, UUID) else value.isoformat()
    return value


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False))


ACTOR = typer.Option("cli", "--actor", envvar="LEDGER_ACTOR", help="Who is making this change (recorded on events).")
REASON = typer.Option(None, "--reason", help="Why (recorded on events).")
JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")
