"""``ledger tokens``: create, list and revoke API tokens."""

from __future__ import annotations

from typing import Optional

import typer

from ledger.cli.context import ACTOR, JSON, REASON, acting, emit_json, parse_uuid, state

tokens = typer.Typer(help="Manage API tokens (only a salted hash of each token is stored).", no_args_is_help=True)


@tokens.command("create")
def create_token(
    name: str = typer.Option(..., "--name", help="Who the token is for; recorded as the actor of its requests."),
    role: str = typer.Option(..., "--role", help="reader, editor or admin."),
    actor: str = ACTOR,
    reason: Optional[str] = REASON,
    as_json: bool = JSON,
) -> None:
    """Create a token and print it once."""
    with acting(actor, reason):
        token_id, token = state.ledger.issue_token(name, role)
    if as_json:
        emit_json({"id": token_id, "name": name, "role": role, "token": token})
    else:
        typer.echo(f"token {token_id} for {name} ({role}); shown once, keep it safe:\n{token}")


@tokens.command("list")
def list_tokens(as_json: bool = JSON) -> None:
    """List tokens (never their secrets)."""
    records = state.ledger.list_tokens()
    if as_json:
        emit_json([{"id": r.token_id, "name": r.name, "role": r.role, "issued_at": r.issued_at,
                    "revoked": r.revoked} for r in records])
        return
    for r in records:
        typer.echo(f"{r.token_id}  {r.name:<20} {r.role:<7} issued {r.issued_at}{'  REVOKED' if r.revoked else ''}")
    if not records:
        typer.echo("no tokens")


@tokens.command("revoke")
def revoke_token(
    token_id: str = typer.Argument(..., help="The token's id (from `ledger tokens list`)."),
    actor: str = ACTOR,
    reason: Optional[str] = REASON,
) -> None:
    """Revoke a token; requests with it are refused from then on."""
    with acting(actor, reason):
        revoked = state.ledger.revoke_token(parse_uuid(token_id, "token id"))
    typer.echo("revoked" if revoked else "already revoked")


def register(app: typer.Typer) -> None:
    app.add_typer(tokens, name="tokens")
