"""API tokens: issuing, revoking, listing and checking them, as commands on the one ``AccessTokens`` aggregate."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from ledger.access import AccessTokens, Principal, TokenRecord, parse_token
from ledger.application import ProfileLedger, retrying
from ledger.errors import AuthenticationError, TamperedRecordError


class TokenService:
    def __init__(self, ledger: ProfileLedger) -> None:
        self.ledger = ledger

    def issue(self, name: str, role: str, expires_at: datetime | None = None) -> tuple[TokenRecord, str]:
        """Record a new API token; returns its record and the token itself (shown once, never stored)."""

        def attempt() -> tuple[TokenRecord, str]:
            tokens = self.current() or AccessTokens()
            token = tokens.issue(name, role, expires_at)
            self.ledger.save(tokens)
            return tokens.tokens[parse_token(token)[0]], token

        return retrying(attempt)

    def revoke(self, token_id: UUID) -> bool:
        """Revoke a token; False when it was revoked already."""

        def attempt() -> bool:
            tokens = self.current() or AccessTokens()
            revoked = tokens.revoke(token_id)
            if revoked:
                self.ledger.save(tokens)
            return revoked

        return retrying(attempt)

    def records(self) -> list[TokenRecord]:
        """Every token ever issued (never their secrets)."""
        tokens = self.current()
        return list(tokens.tokens.values()) if tokens else []

    def authenticate(self, token: str) -> Principal:
        """The principal a token stands for; refused when unknown, malformed, revoked or expired."""
        tokens = self.current()
        if tokens is None:
            raise AuthenticationError("the token is unknown or revoked")
        return tokens.authenticate(token)

    def current(self) -> AccessTokens | None:
        """The tokens aggregate as recorded now (None before the first token is issued)."""
        self.refuse_on_a_tampered_log()
        return self.ledger.find_aggregate(AccessTokens.ID)

    def refuse_on_a_tampered_log(self) -> None:
        """No token is taken from a log a walk found tampered with: one revoked there might work again."""
        tampered = self.ledger.events.tampered  # type: ignore[attr-defined]
        if tampered is not None:
            raise TamperedRecordError(f"no token is accepted on a tampered log (restore the database): {tampered}")
