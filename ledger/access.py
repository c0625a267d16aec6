"""API tokens and roles. Tokens are recorded as events of one ``AccessTokens`` aggregate; only a salted hash of
each secret is ever stored. A token reads ``pl_<token id hex>_<secret>``: the id finds the record, the secret is
checked against the hash in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from uuid import UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate, event

from ledger import values
from ledger.domainmodel import LEDGER_NAMESPACE, AuditedEvent
from ledger.errors import AuthenticationError, ConflictError, TokenNotFoundError, ValidationError

ROLES = ("reader", "editor", "admin")
TOKEN_PREFIX = "pl_"
TOKEN_NAME_MAX = 100


class TokenNameTakenError(ConflictError):
    """Another live (unrevoked, unexpired) token has this name, or one that looks the same."""

    code = "token_name_taken"


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
    expires_at: str | None = None

    def expired(self, now: datetime | None = None) -> bool:
        if self.expires_at is None:
            return False
        return (now or datetime.now(timezone.utc)) >= datetime.fromisoformat(self.expires_at)

    def live(self, now: datetime | None = None) -> bool:
        """Whether requests with this token are accepted now."""
        return not self.revoked and not self.expired(now)


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

    def issue(self, name: str, role: str, expires_at: datetime | None = None) -> str:
        """Record a new token and return its secret form (shown once, never stored).

        Names follow the rules of profile names (:func:`ledger.values.display_name`) and are unique among the
        live tokens, compared as profile names are: a revoked or expired token's name may be given again (a
        rotation), two live tokens never share one (the name is the actor of every change made with it).
        """
        name = values.display_name(name, "name", TOKEN_NAME_MAX)
        if role not in ROLES:
            raise ValidationError(f"role must be one of {', '.join(ROLES)} (got {role!r})", field="role")
        now = datetime.now(timezone.utc)
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise ValidationError("expires_at needs a time zone offset", field="expires_at")
            if expires_at <= now:
                raise ValidationError("expires_at must be in the future", field="expires_at")
        key = values.name_key(name)
        holder = next(
            (r for r in self.tokens.values() if r.live(now) and values.name_key(r.name) == key), None
        )
        if holder is not None:
            raise TokenNameTakenError(
                f"a live token named {holder.name!r} exists; revoke it first or choose another name",
                name=name,
                token_id=str(holder.token_id),
            )
        token_id, secret, salt = uuid4(), secrets.token_urlsafe(32), secrets.token_hex(16)
        self._issued(
            token_id=token_id, name=name, role=role, salt=salt, digest=hash_secret(salt, secret),
            issued_at=now.isoformat(),
            expires_at=_utc_expiry(expires_at).isoformat() if expires_at is not None else None,
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
        if record.expired():
            raise AuthenticationError(f"the token expired at {record.expires_at}")
        return Principal(name=record.name, role=record.role, token_id=record.token_id)

    def allows(self, principal: Principal) -> bool:
        """Whether the token ``principal`` authenticated with is still live (not revoked, not expired)."""
        record = self.tokens.get(principal.token_id) if principal.token_id is not None else None
        return record is not None and record.live()

    @event("Issued")
    def _issued(
        self, token_id: UUID, name: str, role: str, salt: str, digest: str, issued_at: str,
        expires_at: str | None = None,  # added later: events recorded before it have none
    ) -> None:
        self.tokens[token_id] = TokenRecord(
            token_id=token_id, name=name, role=role, salt=salt, digest=digest, issued_at=issued_at,
            expires_at=expires_at,
        )

    @event("Revoked")
    def _revoked(self, token_id: UUID) -> None:
        self.tokens[token_id] = replace(self.tokens[token_id], revoked=True)


_TOKEN_ID = re.compile(r"[0-9a-f]{32}")
_DURATION = re.compile(r"^\s*(\d{1,18})\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def expiry_after(expires_in: str | int, now: datetime | None = None) -> datetime:
    """The moment ``expires_in`` from now: seconds, or a number with a unit (``90m``, ``12h``, ``30d``, ``2w``)."""
    match = _DURATION.match(str(expires_in).lower())
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else 0
    if seconds <= 0:
        raise ValidationError(
            f"expires_in must be a positive duration of at most 18 digits and a unit, such as 3600, 90m, 12h or 30d "
            f"(got {str(expires_in)[:40]!r})",
            field="expires_in",
        )
    try:
        return (now or datetime.now(timezone.utc)) + timedelta(seconds=seconds)
    except OverflowError:
        raise ValidationError("expires_in reaches beyond the year 9999", field="expires_in") from None


def _utc_expiry(moment: datetime) -> datetime:
    """``moment`` in UTC, which the calendar (years 1 to 9999) must still hold."""
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise ValidationError("expires_at lies beyond the year 9999 in UTC", field="expires_at") from None


def parse_token(token: str) -> tuple[UUID, str]:
    if not token.startswith(TOKEN_PREFIX) or token.count("_") < 2:
        raise AuthenticationError("malformed token")
    id_hex, _, secret = token[len(TOKEN_PREFIX):].partition("_")
    if not _TOKEN_ID.fullmatch(id_hex):  # as issued: 32 lowercase hex digits (not a UUID in another spelling)
        raise AuthenticationError("malformed token")
    return UUID(hex=id_hex), secret
