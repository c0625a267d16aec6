"""API tokens and roles. Tokens are recorded as events of one ``AccessTokens`` aggregate; only a salted hash of
each secret is ever stored. A token reads ``pl_<token id hex>_<secret>``: the id finds the record, the secret is
checked against the hash in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from uuid import UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate, event

from ledger.domainmodel import LEDGER_NAMESPACE, AuditedEvent
from ledger.errors import AuthenticationError, TokenNotFoundError, ValidationError

ROLES = ("reader", "editor", "admin")
TOKEN_PREFIX = "pl_"


def role_allows(role: str, required: str) -> bool:
    """Roles are ordered: reader < editor < admin."""
    return ROLES.index(role) >= ROLES.index(required)


def hash_secret(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    name: str
    role: str
    token_id: UUID | None = None


@dataclass(frozen=True)
class TokenRecord:
    token_id: UUID
    name: str
    role: str
    salt: str
    digest: str
    issued_at: str
    revoked: bool = False


class AccessTokens(Aggregate):
    """Every API token ever issued, and which are revoked."""

    class Event(AuditedEvent):
        pass

    ID = uuid5(LEDGER_NAMESPACE, "access-tokens")

    @staticmethod
    def create_id() -> UUID:
        return AccessTokens.ID

    @event("Opened")
    def __init__(self) -> None:
        self.tokens: dict[UUID, TokenRecord] = {}

    def issue(self, name: str, role: str) -> str:
        """Record a new token and return its secret form (shown once, never stored)."""
        name = name.strip() if isinstance(name, str) and "\x00" not in name else ""
        if not name or len(name) > 100:
            raise ValidationError("a token needs a name of 1 to 100 characters", field="name")
        if role not in ROLES:
            raise ValidationError(f"role must be one of {', '.join(ROLES)} (got {role!r})", field="role")
        token_id, secret, salt = uuid4(), secrets.token_urlsafe(32), secrets.token_hex(16)
        self._issued(
            token_id=token_id, name=name, role=role, salt=salt, digest=hash_secret(salt, secret),
            issued_at=datetime.now(timezone.utc).isoformat(),
        )
        return f"{TOKEN_PREFIX}{token_id.hex}_{secret}"

    def revoke(self, token_id: UUID) -> bool:
        record = self.tokens.get(token_id)
        if record is None:
            raise TokenNotFoundError(f"token {token_id} not found", token_id=str(token_id))
        if record.revoked:
            return False
        self._revoked(token_id=token_id)
        return True

    def authenticate(self, token: str) -> Principal:
        token_id, secret = parse_token(token)
        record = self.tokens.get(token_id)
        if record is None or record.revoked or not hmac.compare_digest(record.digest, hash_secret(record.salt, secret)):
            raise AuthenticationError("the token is unknown or revoked")
        return Principal(name=record.name, role=record.role, token_id=record.token_id)

    @event("Issued")
    def _issued(self, token_id: UUID, name: str, role: str, salt: str, digest: str, issued_at: str) -> None:
        self.tokens[token_id] = TokenRecord(
            token_id=token_id, name=name, role=role, salt=salt, digest=digest, issued_at=issued_at
        )

    @event("Revoked")
    def _revoked(self, token_id: UUID) -> None:
        self.tokens[token_id] = replace(self.tokens[token_id], revoked=True)


def parse_token(token: str) -> tuple[UUID, str]:
    if not token.startswith(TOKEN_PREFIX) or token.count("_") < 2:
        raise AuthenticationError("malformed token")
    id_hex, _, secret = token[len(TOKEN_PREFIX):].partition("_")
    try:
        return UUID(hex=id_hex), secret
    except ValueError:
        raise AuthenticationError("malformed token") from None
