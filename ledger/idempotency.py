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
import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import RecordConflictError

from ledger.domainmodel import LEDGER_NAMESPACE, AuditedEvent
from ledger.errors import ConflictError, ValidationError

KEY_MAX = 255
ANSWERS_KEPT_SECONDS = 24 * 3600


class IdempotencyKeyInUseError(ConflictError):
    """A request with this key was recorded already (its answer is not available, or it is still running)."""

    code = "idempotency_key_in_use"


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


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), query, body):
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
    extra: dict[str, Any] = field(default_factory=dict)

    def aggregate(self) -> IdempotencyKey:
        return IdempotencyKey(claim=self.id, fingerprint=self.fingerprint, method=self.method, path=self.path)


pending_claim: ContextVar[Claim | None] = ContextVar("pending_claim", default=None)


@contextmanager
def claiming(claim: Claim) -> Iterator[None]:
    """The saves made in this context (its thread, and threads started from it) record ``claim`` with the first
    save that commits."""
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
            raise IdempotencyKeyInUseError(
                "a request with this Idempotency-Key was recorded already; retry to get its answer"
            ) from None
        raise
    claim.saved = True


def recorded(application: Any, claim: UUID) -> IdempotencyKey | None:
    try:
        found = application.repository.get(claim)
    except AggregateNotFoundError:
        return None
    return found if isinstance(found, IdempotencyKey) else None


@dataclass(frozen=True)
class Answer:
    fingerprint: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class Answers:
    """The answers of committed keyed commands, in a table beside the log (kept ``ANSWERS_KEPT_SECONDS``).

    Uses the application's own datastore (PostgreSQL or SQLite); with neither (the in-memory store) a dict.
    """

    TABLE = "ledger_idempotency_answers"

    def __init__(self, datastore: Any) -> None:
        self.datastore = datastore
        module = type(datastore).__module__ if datastore is not None else ""
        self.dialect = "postgres" if "postgres" in module else "sqlite" if "sqlite" in module else None
        self._memory: dict[str, tuple[Answer, float]] = {}
        self._ready = False
        self._creating = threading.Lock()
        self._writes = 0

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.dialect == "postgres" else statement

    def _ensure(self) -> None:
        if self._ready or self.dialect is None:
            return
        blob = "bytea" if self.dialect == "postgres" else "BLOB"
        with self._creating, self.datastore.transaction(commit=True) as cursor:
            if self._ready:
                return
            if self.dialect == "postgres":  # CREATE TABLE IF NOT EXISTS races with itself across sessions
                cursor.execute(f"SELECT pg_advisory_xact_lock(hashtext('{self.TABLE}'))")
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {self.TABLE} (id text PRIMARY KEY, fingerprint text NOT NULL, "
                f"status integer NOT NULL, headers text NOT NULL, body {blob} NOT NULL, "
                "recorded_at double precision NOT NULL)"
            )
        self._ready = True

    def get(self, claim: UUID) -> Answer | None:
        if self.dialect is None:
            kept = self._memory.get(str(claim))
            return kept[0] if kept and kept[1] > time.time() - ANSWERS_KEPT_SECONDS else None
        self._ensure()
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                self._sql(f"SELECT fingerprint, status, headers, body FROM {self.TABLE} WHERE id = ? AND recorded_at > ?"),
                (str(claim), time.time() - ANSWERS_KEPT_SECONDS),
            )
            row = cursor.fetchone()
        if row is None:
            return None
        values = [row[name] for name in ("fingerprint", "status", "headers", "body")] if hasattr(row, "keys") else row
        return Answer(values[0], int(values[1]), [tuple(pair) for pair in json.loads(values[2])], bytes(values[3]))

    def put(self, claim: UUID, answer: Answer) -> None:
        now = time.time()
        if self.dialect is None:
            self._memory[str(claim)] = (answer, now)
            return
        self._ensure()
        conflict = "ON CONFLICT (id) DO NOTHING"
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                self._sql(
                    f"INSERT INTO {self.TABLE} (id, fingerprint, status, headers, body, recorded_at) "
                    f"VALUES (?, ?, ?, ?, ?, ?) {conflict}"
                ),
                (str(claim), answer.fingerprint, answer.status, json.dumps(answer.headers), answer.body, now),
            )
            self._writes += 1
            if self._writes % 1000 == 1:
                cursor.execute(self._sql(f"DELETE FROM {self.TABLE} WHERE recorded_at < ?"), (now - ANSWERS_KEPT_SECONDS,))
