"""``ledger tokens``: create, list and revoke API tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

import typer

from ledger.cli.commands import Commands
from ledger.access import expiry_after
from ledger.cli.context import ACTOR, JSON, REASON, acting, emit, emit_json, parse_uuid, say, state
from ledger.errors import ValidationError
from ledger.tokens import TokenService

tokens = Commands(help="Manage API tokens (only a salted hash of each token is stored).", no_args_is_help=True)


def _expiry(expires_in: str | None) -> datetime | None:
    """``--expires-in`` as the moment it names; one of the wrong form is a usage error (exit 2, with the usage)."""
    try:
        return None if expires_in is None else expiry_after(expires_in)
    except ValidationError as error:
        raise typer.BadParameter(error.message) from None


@tokens.command("create")
def create_token(
    name: str = typer.Option(..., "--name", help="Who the token is for; recorded as the actor of its requests."),
    role: str = typer.Option(..., "--role", help="reader, editor or admin."),
    expires_at: Optional[str] = typer.Option(
        None, "--expires-in", help="Stop working after this long: seconds, or 90m, 12h, 30d, 2w. Default: never.",
        callback=_expiry,
    ),
    actor: str = ACTOR,
    reason: Optional[str] = REASON,
    as_json: bool = JSON,
) -> None:
    """Create a token and print it once. Names are unique among live tokens."""
    with acting(actor, reason):
        record, token = TokenService(state.ledger).issue(name, role, expires_at)
    if as_json:
        emit_json({"id": record.token_id, "name": record.name, "role": role, "expires_at": record.expires_at,
                   "token": token})
    else:
        until = f", expires {record.expires_at}" if record.expires_at else ""
        say(f"token {record.token_id} for {record.name} ({role}{until}); shown once, keep it safe:\n{token}")


@tokens.command("list")
def list_tokens(as_json: bool = JSON) -> None:
    """List tokens (never their secrets)."""
    records = TokenService(state.ledger).records()
    if as_json:
        emit_json([{"id": r.token_id, "name": r.name, "role": r.role, "issued_at": r.issued_at,
                    "expires_at": r.expires_at, "revoked": r.revoked} for r in records])
        return
    for r in records:
        state_note = "  REVOKED" if r.revoked else "  EXPIRED" if r.expired() else ""
        until = f" expires {r.expires_at}" if r.expires_at else ""
        say(f"{r.token_id}  {r.name:<20} {r.role:<7} issued {r.issued_at}{until}{state_note}")
    if not records:
        say("no tokens")


@tokens.command("revoke")
def revoke_token(
    token_id: str = typer.Argument(..., metavar="TOKEN_ID", help="The token's id (from `ledger tokens list`)."),
    actor: str = ACTOR,
    reason: Optional[str] = REASON,
    as_json: bool = JSON,
) -> None:
    """Revoke a token; requests with it are refused from then on."""
    with acting(actor, reason):
        revoked = TokenService(state.ledger).revoke(parse_uuid(token_id, "token id"))
    emit(as_json, {"revoked": revoked}, ["revoked" if revoked else "already revoked"])


def register(app: typer.Typer) -> None:
    app.add_typer(tokens, name="tokens")
