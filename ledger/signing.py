"""Signed events: every stored event and snapshot is signed (Ed25519) with a key the database never sees.

The chain (:mod:`ledger.chain`) proves that rows were not changed after they were linked; it cannot prove who
wrote them, because on PostgreSQL the links are computed inside the database. The signature does: a row
inserted or edited through SQL, even one the chain trigger links, carries no valid signature.

One signature covers the events of one save (they are stored contiguously, in one transaction): a command
that records three events signs once. Stored state of a signed record::

    MAGIC (4) ‖ key id (8) ‖ Ed25519 signature (64) ‖ MAC (16) ‖ index (2) ‖ count (2) ‖ payload

* the signature is over ``"profile-ledger events v1\0" ‖ count ‖ digest₀ ‖ … ‖ digestₙ₋₁`` where each digest
  is ``event_digest(originator id, version, topic, payload)`` (:mod:`ledger.chain`): it binds every event of
  the save to its stream, version, type and content, in order; each record says which of how many it is;
* the key id is the first 8 bytes of ``sha256(raw public key)``;
* the MAC is ``HMAC-SHA256(k, digest ‖ index ‖ count ‖ signature)`` truncated to 16 bytes, with ``k``
  derived from the private key: the service checks it on every read (a microsecond or two, against some 80 µs
  for an Ed25519 check, and without the other events of the save), while anyone holding only the public key
  checks the signatures by walking the log (``ledger verify --public-key``). Neither can be made without the
  private key; the service's own walks check both.

The key: ``LEDGER_SIGNING_KEY`` names a file holding an Ed25519 private key (PEM PKCS#8, or the raw 32
bytes). Unset, the key is ``.ledger/signing-key.pem`` beside the SQLite file (in the working directory for
PostgreSQL), created with mode 0600 on first use, with a warning. Every process writing to one database must
use the same key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import EventStore, Mapper, Notification, Recording, StoredEvent

from ledger.chain import event_digest
from ledger.errors import SigningKeyError, TamperedRecordError

SIGNING_KEY_ENV = "LEDGER_SIGNING_KEY"
DEFAULT_KEY_DIR = ".ledger"
DEFAULT_KEY_FILE = "signing-key.pem"
MAGIC = b"\x00LS1"
KEY_ID_SIZE, SIGNATURE_SIZE, MAC_SIZE = 8, 64, 16
HEADER_SIZE = len(MAGIC) + KEY_ID_SIZE + SIGNATURE_SIZE + MAC_SIZE + 4
MAX_GROUP = 0xFFFF
_KEY_AT = len(MAGIC)
_SIGNATURE_AT = _KEY_AT + KEY_ID_SIZE
_MAC_AT = _SIGNATURE_AT + SIGNATURE_SIZE
_INDEX_AT = _MAC_AT + MAC_SIZE
EVENT_CONTEXT = b"profile-ledger events v1\x00"
NO_SIGNATURE = "it carries no signature: it was not written by the ledger"
FORGED = "it was forged or changed outside the ledger"
MAC_CONTEXT = b"profile-ledger mac v1\x00"

logger = logging.getLogger(__name__)


def default_key_path(env: Mapping[str, str]) -> Path:
    """Where the key is when ``LEDGER_SIGNING_KEY`` is unset: beside the SQLite file, else the working directory."""
    sqlite = env.get("SQLITE_DBNAME", "")
    if sqlite and ":memory:" not in sqlite and "mode=memory" not in sqlite:
        return Path(sqlite).resolve().parent / DEFAULT_KEY_DIR / DEFAULT_KEY_FILE
    return Path(DEFAULT_KEY_DIR) / DEFAULT_KEY_FILE


def load_private_key(path: Path) -> Ed25519PrivateKey:
    data = path.read_bytes()
    if len(data) == 32:
        return Ed25519PrivateKey.from_private_bytes(data)
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A public key file (PEM or raw 32 bytes); a private key file gives its public key."""
    data = path.read_bytes()
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} does not hold an Ed25519 public key")
    return key


def create_private_key(path: Path) -> Ed25519PrivateKey:
    """A new key written to ``path`` (mode 0600); an existing file is never replaced (another process won)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_private_key(path)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    logger.warning(
        "created a new event-signing key at %s (mode 0600): keep it out of the database's reach and back it up; "
        "every process writing to this database needs it (set %s)", path, SIGNING_KEY_ENV,
    )
    return key


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id_of(key: Ed25519PublicKey) -> bytes:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:KEY_ID_SIZE]


class PublicKeyCheck:
    """Checks records and statements with a public key only (the auditor's side)."""

    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self.public_key = public_key
        self.key_id = key_id_of(public_key)

    def verify_statement(self, message: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def record_check(self) -> RecordCheck:
        """A check of records met in log order, by their signatures."""
        return SignatureCheck(self)


class RecordCheck:
    """Records fed in log order; ``feed`` and ``finish`` name the first one the key's holder did not write."""

    def feed(self, position: int, originator_id: Any, originator_version: int, topic: str,
             state: bytes) -> tuple[int, str] | None:
        raise NotImplementedError

    def finish(self) -> tuple[int, str] | None:
        return None


class SignatureCheck(RecordCheck):
    """Gathers the records of each save and checks the save's one Ed25519 signature."""

    def __init__(self, keys: PublicKeyCheck) -> None:
        self.keys = keys
        self._group: list[bytes] = []
        self._signature = b""
        self._first = 0

    def feed(self, position: int, originator_id: Any, originator_version: int, topic: str,
             state: bytes) -> tuple[int, str] | None:
        record = Sealed.parse(state)
        if record is None:
            return position, NO_SIGNATURE
        if record.key_id != self.keys.key_id:
            return position, _other_key(record.key_id, self.keys.key_id)
        if record.index != len(self._group) or (self._group and record.signature != self._signature):
            if self._group:
                return self._first, (f"the save that starts at position {self._first} is incomplete or out of "
                                     "order: an event was removed, inserted or moved")
            return position, f"it is event {record.index + 1} of a save whose earlier events are missing"
        if not self._group:
            self._first, self._signature = position, record.signature
        self._group.append(record.digest(originator_id, originator_version, topic))
        if len(self._group) < record.count:
            return None
        group, self._group = self._group, []
        message = EVENT_CONTEXT + struct.pack(">H", len(group)) + b"".join(group)
        if not self.keys.verify_statement(message, record.signature):
            where = f"position {self._first}" if len(group) == 1 else f"positions {self._first} to {position}"
            return self._first, f"the signature of {where} does not match their content: {FORGED}"
        return None

    def finish(self) -> tuple[int, str] | None:
        if self._group:
            return self._first, f"the save that starts at position {self._first} is missing its last events"
        return None


class MacCheck(RecordCheck):
    """Checks each record's MAC (the service's own fast check: it holds the private key)."""

    def __init__(self, keys: SigningKeys) -> None:
        self.keys = keys

    def feed(self, position: int, originator_id: Any, originator_version: int, topic: str,
             state: bytes) -> tuple[int, str] | None:
        problem = self.keys.mac_problem(originator_id, originator_version, topic, state)[1]
        return None if problem is None else (position, problem)


class BothChecks(RecordCheck):
    def __init__(self, *checks: RecordCheck) -> None:
        self.checks = checks

    def feed(self, position: int, originator_id: Any, originator_version: int, topic: str,
             state: bytes) -> tuple[int, str] | None:
        found = [check.feed(position, originator_id, originator_version, topic, state) for check in self.checks]
        return min((item for item in found if item is not None), default=None)

    def finish(self) -> tuple[int, str] | None:
        return min((item for item in (check.finish() for check in self.checks) if item is not None), default=None)


class SigningKeys(PublicKeyCheck):
    """The service's key: signs what it stores and checks what it reads. Loaded (or created) on first use."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self._create = create
        self._lock = threading.Lock()
        self._private: Ed25519PrivateKey | None = None
        self._mac_key = b""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SigningKeys:
        configured = env.get(SIGNING_KEY_ENV)
        if configured:
            return cls(Path(configured), create=False)
        return cls(default_key_path(env))

    def _load(self) -> Ed25519PrivateKey:
        if self._private is None:
            with self._lock:
                if self._private is None:
                    try:
                        if self.path.exists() or not self._create:
                            private = load_private_key(self.path)
                        else:
                            private = create_private_key(self.path)
                    except (OSError, ValueError) as error:
                        raise SigningKeyError(
                            f"the event-signing key {self.path} cannot be read: {error}", path=str(self.path)
                        ) from None
                    self.public_key = private.public_key()
                    self.key_id = key_id_of(self.public_key)
                    raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                serialization.NoEncryption())
                    self._mac_key = hashlib.sha256(MAC_CONTEXT + raw).digest()
                    self._private = private
        return self._private

    def public(self) -> PublicKeyCheck:
        self._load()
        return PublicKeyCheck(self.public_key)

    def sign_statement(self, message: bytes) -> bytes:
        return self._load().sign(message)

    def verify_statement(self, message: bytes, signature: bytes) -> bool:
        self._load()
        return super().verify_statement(message, signature)

    def record_check(self, *, strict: bool = False) -> RecordCheck:
        """The MAC of each record; ``strict``: each save's signature too."""
        self._load()
        return BothChecks(MacCheck(self), SignatureCheck(self)) if strict else MacCheck(self)

    def _mac(self, digest: bytes, index: int, count: int, signature: bytes) -> bytes:
        message = b"".join((digest, struct.pack(">HH", index, count), signature))
        return hmac.digest(self._mac_key, message, "sha256")[:MAC_SIZE]

    def seal_all(self, records: Sequence[tuple[Any, int, str, bytes]]) -> list[bytes]:
        """The stored states of the records of one save ``(originator id, version, topic, payload)``: one
        signature over them all, a MAC each."""
        private = self._load()
        count = len(records)
        if not 0 < count <= MAX_GROUP:
            return [state for start in range(0, count, MAX_GROUP)
                    for state in self.seal_all(records[start:start + MAX_GROUP])]
        digests = [event_digest(_uuid(oid), version, topic, payload) for oid, version, topic, payload in records]
        signature = private.sign(EVENT_CONTEXT + struct.pack(">H", count) + b"".join(digests))
        return [
            b"".join((MAGIC, self.key_id, signature, self._mac(digest, index, count, signature),
                      struct.pack(">HH", index, count), payload))
            for index, (digest, (_, _, _, payload)) in enumerate(zip(digests, records))
        ]

    def seal(self, originator_id: Any, originator_version: int, topic: str, payload: bytes) -> bytes:
        return self.seal_all([(originator_id, originator_version, topic, payload)])[0]

    def mac_problem(self, originator_id: Any, originator_version: int, topic: str,
                    state: bytes) -> tuple[bytes, str | None]:
        """The payload and, when the record is not this service's, why (by its MAC; on every read: kept lean)."""
        if self._private is None:
            self._load()
        state = bytes(state)
        if len(state) < HEADER_SIZE or state[:_KEY_AT] != MAGIC:
            return b"", NO_SIGNATURE
        payload = state[HEADER_SIZE:]
        if state[_KEY_AT:_SIGNATURE_AT] != self.key_id:
            return payload, _other_key(state[_KEY_AT:_SIGNATURE_AT], self.key_id)
        digest = event_digest(_uuid(originator_id), originator_version, topic, payload)
        message = b"".join((digest, state[_INDEX_AT:HEADER_SIZE], state[_SIGNATURE_AT:_MAC_AT]))
        if not hmac.compare_digest(state[_MAC_AT:_INDEX_AT], hmac.digest(self._mac_key, message, "sha256")[:MAC_SIZE]):
            return payload, f"its signature does not match its content: {FORGED}"
        return payload, None

    def open(self, originator_id: Any, originator_version: int, topic: str, state: bytes) -> bytes:
        """The payload of a record this service wrote; :class:`TamperedRecordError` for any other."""
        payload, problem = self.mac_problem(originator_id, originator_version, topic, state)
        if problem is not None:
            raise TamperedRecordError(
                f"refusing the stored record {originator_id}@{originator_version} ({topic}): {problem}",
                originator_id=str(originator_id), originator_version=originator_version,
            )
        return payload


@dataclass(frozen=True)
class Sealed:
    """A stored state, taken apart."""

    key_id: bytes
    signature: bytes
    mac: bytes
    index: int
    count: int
    payload: bytes

    @classmethod
    def parse(cls, state: bytes) -> Sealed | None:
        state = bytes(state)
        if len(state) < HEADER_SIZE or not state.startswith(MAGIC):
            return None
        at = len(MAGIC)
        key_id, at = state[at:at + KEY_ID_SIZE], at + KEY_ID_SIZE
        signature, at = state[at:at + SIGNATURE_SIZE], at + SIGNATURE_SIZE
        mac, at = state[at:at + MAC_SIZE], at + MAC_SIZE
        index, count = struct.unpack_from(">HH", state, at)
        if index >= count:
            return None
        return cls(key_id, signature, mac, index, count, state[HEADER_SIZE:])

    def digest(self, originator_id: Any, originator_version: int, topic: str) -> bytes:
        return event_digest(_uuid(originator_id), originator_version, topic, self.payload)


def _other_key(found: bytes, expected: bytes) -> str:
    return f"it is signed by key {found.hex()}, not by this ledger's key {expected.hex()}"


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


class SigningMapper(Mapper[UUID]):
    """The library's mapper, with every stored record signed, and checked (its MAC) when it is read."""

    def __init__(self, *args: Any, keys: SigningKeys, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keys = keys

    def to_stored_events(self, domain_events: Sequence[DomainEventProtocol[UUID]]) -> list[StoredEvent]:
        """The events of one save, signed together."""
        plain = [super(SigningMapper, self).to_stored_event(event) for event in domain_events]
        states = self.keys.seal_all([(s.originator_id, s.originator_version, s.topic, s.state) for s in plain])
        return [
            StoredEvent(originator_id=s.originator_id, originator_version=s.originator_version, topic=s.topic,
                        state=state)
            for s, state in zip(plain, states)
        ]

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        return self.to_stored_events([domain_event])[0]

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        payload = self.open_state(stored_event.originator_id, stored_event.originator_version, stored_event.topic,
                                  stored_event.state)
        return super().to_domain_event(StoredEvent(
            originator_id=stored_event.originator_id,
            originator_version=stored_event.originator_version,
            topic=stored_event.topic,
            state=payload,
        ))

    def open_state(self, originator_id: Any, originator_version: int, topic: str, state: bytes) -> bytes:
        """The library's stored state inside a signed record (raises :class:`TamperedRecordError`)."""
        return self.keys.open(originator_id, originator_version, topic, state)


class SigningEventStore(EventStore[UUID]):
    """The library's event store, with the events of each save signed together (one signature per save)."""

    def put(self, domain_events: Sequence[DomainEventProtocol[UUID]], **kwargs: Any) -> list[Recording[UUID]]:
        if not isinstance(self.mapper, SigningMapper):
            return super().put(domain_events, **kwargs)
        stored_events = self.mapper.to_stored_events(domain_events)
        positions = self.recorder.insert_events(stored_events, **kwargs)
        if not positions:
            return []
        return [
            Recording(event, Notification(originator_id=stored.originator_id,
                                          originator_version=stored.originator_version, topic=stored.topic,
                                          state=stored.state, id=position))
            for event, stored, position in zip(domain_events, stored_events, positions, strict=True)
        ]


class CheckedSnapshotStore(EventStore[UUID]):
    """The snapshot store: a snapshot that fails its signature check is skipped with a warning (the aggregate
    is then replayed from its events, which are checked in turn), never used."""

    def get(self, originator_id: UUID, *args: Any, **kwargs: Any) -> list[DomainEventProtocol[UUID]]:  # type: ignore[override]
        stored = self.recorder.select_events(originator_id, *args, **kwargs)
        snapshots = []
        for record in stored:
            try:
                snapshots.append(self.mapper.to_domain_event(record))
            except TamperedRecordError as error:
                logger.warning("ignoring a snapshot: %s", error.message)
        return snapshots
