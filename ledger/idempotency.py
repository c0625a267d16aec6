"""Idempotent commands: a retry with the same ``Idempotency-Key`` appends nothing.

A command that carries a key claims it in the same atomic save as its own events: an ``IdempotencyKey``
aggregate whose id is a UUIDv5 of the actor and the key, created with a ``Used`` event holding a fingerprint of the
request (method, path, body). The store lets one save create a stream, so whichever way a retry arrives (the first
answer lost to a dropped connection or a database stop after the commit, a client that resends, another server on
the same database), once one save carrying the key has committed no other can: its save fails as a whole with
:class:`IdempotencyKeyInUseError`, and nothing of it is written.

The answer of a committed command is kept beside the log (:class:`Answers`, a table in the same database) so that
a retry gets it again; see ``ledger.api.idempotency`` for the HTTP side. Only the claim is in the log: it is
what makes the guarantee hold, and it is never lost.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import RecordConflictError

from ledger.domainmodel import LEDGER_NAMESPACE, AuditedEvent
from ledger.errors import ConflictError, ValidationError
from ledger.side_tables import SideTable

log = logging.getLogger("ledger.idempotency")

KEY_MAX = 255
ANSWERS_KEPT_SECONDS = 24 * 3600


class IdempotencyKeyInUseError(ConflictError):
    """A request with this key was recorded already (its answer is not available, or it is still running)."""

    code = "idempotency_key_in_use"
    passing = True
    retry_after_s: int | None = None
    """Set when a retry should find the answer (``Retry-After``)."""


class IdempotencyKeyReusedError(ValidationError):
    """The key was used before for a different request (method, path or body)."""

    code = "idempotency_key_reused"


def check_key(key: str) -> str:
    if not 1 <= len(key) <= KEY_MAX or not key.isascii() or not key.isprintable():
        raise ValidationError(
            f"Idempotency-Key must be 1 to {KEY_MAX} printable ASCII characters", field="Idempotency-Key"
        )
    return key


def claim_id(actor: str, key: str) -> UUID:
    return uuid5(LEDGER_NAMESPACE, f"idempotency-key:{len(actor)}:{actor}:{key}")


def fingerprint(method: str, path: str, query: bytes, body: bytes, *meaning: bytes) -> str:
    """The request a key was used for; ``meaning``: what else changes what it does (headers given), none adding
    nothing (a request without them prints as it did before they counted)."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), query, body, *meaning):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyKey(Aggregate):
    """That a command with one actor's key was recorded, and which request it was."""

    class Event(AuditedEvent):
        pass

    @staticmethod
    def create_id(claim: UUID, fingerprint: str, method: str, path: str) -> UUID:
        return claim

    @event("Used")
    def __init__(self, claim: UUID, fingerprint: str, method: str, path: str) -> None:
        self.fingerprint, self.method, self.path = fingerprint, method, path


@dataclass
class Claim:
    """A key a request carries, until its command's first save has recorded it."""

    id: UUID
    fingerprint: str
    method: str
    path: str
    saved: bool = False
    lost: bool = False  # another request with the key was recorded first

    def aggregate(self) -> IdempotencyKey:
        return IdempotencyKey(claim=self.id, fingerprint=self.fingerprint, method=self.method, path=self.path)


pending_claim: ContextVar[Claim | None] = ContextVar("pending_claim", default=None)


@contextmanager
def claiming(claim: Claim | None) -> Iterator[None]:
    """The saves made in this context (its thread, and threads started from it) record ``claim`` with the first
    save that commits; ``None``: saves that are not the command's own (housekeeping) record no claim."""
    token = pending_claim.set(claim)
    try:
        yield
    finally:
        pending_claim.reset(token)


@contextmanager
def recorded_with_claim(application: Any, objs: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
    """Wraps an application's ``save``: adds the pending claim to the first save and notes that it committed; a
    save that fails because another save recorded the same claim raises :class:`IdempotencyKeyInUseError`."""
    claim = pending_claim.get()
    if claim is None or claim.saved:
        yield tuple(objs)
        return
    try:
        yield (*objs, claim.aggregate())
    except RecordConflictError:
        if recorded(application, claim.id) is not None:
            in_use = IdempotencyKeyInUseError(
                "a request with this Idempotency-Key was recorded already; retry to get its answer")
            in_use.retry_after_s = 1
            raise in_use from None
        raise
    claim.saved = True


def recorded(application: Any, claim: UUID) -> IdempotencyKey | None:
    found = application.find_aggregate(claim)
    return found if isinstance(found, IdempotencyKey) else None


@dataclass(frozen=True)
class Answer:
    fingerprint: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class Answers:
    """The answers of committed keyed commands, in a table beside the log (kept ``ANSWERS_KEPT_SECONDS``);
    with no database (the in-memory store), in a dict."""

    TABLE = "ledger_kept_answers"  # (``ledger_idempotency_answers`` held them unsealed: never read)
    SEAL = b"profile-ledger kept answer v1\x00"

    def __init__(self, datastore: Any, keys: Any = None) -> None:
        self.keys = keys
        """The log's signing keys: each kept answer is sealed with them, and one whose seal is not theirs (written
        or changed by the database's owner) is never replayed."""
        self.table = SideTable(
            datastore, self.TABLE,
            "id text PRIMARY KEY, fingerprint text NOT NULL, status integer NOT NULL, headers text NOT NULL, "
            "body {blob} NOT NULL, recorded_at double precision NOT NULL, seal {blob} NOT NULL",
        )
        self._memory: dict[str, tuple[Answer, float]] = {}
        self._writes = 0
        self.running: dict[UUID, str] = {}
        """The keyed commands this process is running (claim id → request fingerprint): a twin with the same key
        waits for their answer instead of running too."""

    def get(self, claim: UUID) -> Answer | None:
        oldest = time.time() - ANSWERS_KEPT_SECONDS
        if not self.table.available:
            kept = self._memory.get(str(claim))
            return kept[0] if kept and kept[1] > oldest else None
        row = self.table.one(
            "SELECT fingerprint, status, headers, body, recorded_at, seal FROM {table} WHERE id = ? AND "
            "recorded_at > ?", (str(claim), oldest)
        )
        if row is None:
            return None
        answer = Answer(row[0], int(row[1]), [(name, value) for name, value in json.loads(row[2])], bytes(row[3]))
        if not hmac.compare_digest(bytes(row[5]), self._seal(claim, answer, row[4])):
            log.error("the kept answer of idempotency claim %s is not the ledger's (changed outside it): not "
                      "replayed", claim)
            return None
        return answer

    def _seal(self, claim: UUID, answer: Answer, recorded_at: float) -> bytes:
        """Binds the answer to its claim and its time (so it is not kept past its day either)."""
        if self.keys is None:
            return b""
        what = json.dumps([str(claim), answer.fingerprint, answer.status, answer.headers, recorded_at]).encode()
        return self.keys.seal(self.SEAL, hashlib.sha256(what).digest() + answer.body)

    def put(self, claim: UUID, answer: Answer) -> None:
        now = round(time.time(), 3)  # 13 digits: read back exactly, however few digits the database prints
        if not self.table.available:
            self._memory[str(claim)] = (answer, now)
            return
        statements = [(
            "INSERT INTO {table} (id, fingerprint, status, headers, body, recorded_at, seal) VALUES (?, ?, ?, ?, ?, "
            "?, ?) ON CONFLICT (id) DO NOTHING",
            (str(claim), answer.fingerprint, answer.status, json.dumps(answer.headers), answer.body, now,
             self._seal(claim, answer, now)),
        )]
        self._writes += 1
        if self._writes % 1000 == 1:
            statements.append(("DELETE FROM {table} WHERE recorded_at < ?", (now - ANSWERS_KEPT_SECONDS,)))
        self.table.execute(*statements)
