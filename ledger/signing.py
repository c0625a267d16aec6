"""Signed events: every stored event and snapshot carries an Ed25519 signature by a key the database never sees.

The chain (:mod:`ledger.chain`) proves that rows were not changed after they were linked; it cannot prove who
wrote them, because on PostgreSQL the links are computed inside the database. The signature does: a row
inserted or edited through SQL, even one the chain trigger links, has no valid signature.

Stored state of a signed record::

    MAGIC (4) ‖ key id (8) ‖ Ed25519 signature (64) ‖ MAC (16) ‖ payload (the library's JSON)

* the signed message is ``"profile-ledger event v1\\0" ‖ event_digest(originator id, version, topic, payload)``,
  so a signature cannot be moved to another stream, version or event type;
* the key id is the first 8 bytes of ``sha256(raw public key)``;
* the MAC is ``HMAC-SHA256(k, digest)`` truncated to 16 bytes with ``k`` derived from the private key: the
  service checks it on every read (about a microsecond, against some 80 µs for an Ed25519 check), while
  anyone holding only the public key checks the signature (``ledger verify --public-key``). Neither can be
  made without the private key.

The key: ``LEDGER_SIGNING_KEY`` names a file holding an Ed25519 private key (PEM PKCS#8, or the raw 32
bytes). Unset, the key is ``.ledger/signing-key.pem`` next to the SQLite file (or in the working directory for
PostgreSQL), created with mode 0600 on first use, with a warning. Every process writing to one database must
use the same key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from pathlib import Path
from typing import Any, Mapping
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import EventStore, Mapper, StoredEvent

from ledger.chain import event_digest
from ledger.errors import TamperedRecordError

SIGNING_KEY_ENV = "LEDGER_SIGNING_KEY"
DEFAULT_KEY_DIR = ".ledger"
DEFAULT_KEY_FILE = "signing-key.pem"
MAGIC = b"\x00LS1"
KEY_ID_SIZE, SIGNATURE_SIZE, MAC_SIZE = 8, 64, 16
HEADER_SIZE = len(MAGIC) + KEY_ID_SIZE + SIGNATURE_SIZE + MAC_SIZE
EVENT_CONTEXT = b"profile-ledger event v1\x00"
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

    def record_problem(self, originator_id: Any, originator_version: int, topic: str, state: bytes,
                       *, strict: bool = True) -> str | None:
        """Why a stored record was not written by the holder of the key (None: it was)."""
        return _split(self, originator_id, originator_version, topic, state, strict)[1]


class SigningKeys(PublicKeyCheck):
    """The service's key: signs what it stores and checks what it reads. Loaded (or created) on first use."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self._create = create
        self._lock = threading.Lock()
        self._private: Ed25519PrivateKey | None = None

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
                    if self.path.exists() or not self._create:
                        private = load_private_key(self.path)
                    else:
                        private = create_private_key(self.path)
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

    def mac(self, digest: bytes) -> bytes:
        return hmac.new(self._mac_key, digest, hashlib.sha256).digest()[:MAC_SIZE]

    def seal(self, originator_id: Any, originator_version: int, topic: str, payload: bytes) -> bytes:
        """The stored state: the header, then the payload."""
        private = self._load()
        digest = event_digest(_uuid(originator_id), originator_version, topic, payload)
        return b"".join((MAGIC, self.key_id, private.sign(EVENT_CONTEXT + digest), self.mac(digest), payload))

    def open(self, originator_id: Any, originator_version: int, topic: str, state: bytes) -> bytes:
        """The payload of a record this service wrote; :class:`TamperedRecordError` for any other."""
        self._load()
        payload, problem = _split(self, originator_id, originator_version, topic, state, False)
        if problem is not None:
            raise TamperedRecordError(
                f"refusing the stored record {originator_id}@{originator_version} ({topic}): {problem}",
                originator_id=str(originator_id), originator_version=originator_version,
            )
        return payload

    def record_problem(self, originator_id: Any, originator_version: int, topic: str, state: bytes,
                       *, strict: bool = True) -> str | None:
        self._load()
        return super().record_problem(originator_id, originator_version, topic, state, strict=strict)


def _split(keys: PublicKeyCheck, originator_id: Any, originator_version: int, topic: str, state: bytes,
           strict: bool) -> tuple[bytes, str | None]:
    """The payload and, when the record is not the key holder's, why. ``strict``: check the Ed25519 signature
    even where the MAC could be checked."""
    state = bytes(state)
    if len(state) < HEADER_SIZE or not state.startswith(MAGIC):
        return b"", "it carries no signature: it was not written by the ledger"
    start = len(MAGIC)
    key_id = state[start:start + KEY_ID_SIZE]
    signature = state[start + KEY_ID_SIZE:start + KEY_ID_SIZE + SIGNATURE_SIZE]
    mac = state[HEADER_SIZE - MAC_SIZE:HEADER_SIZE]
    payload = state[HEADER_SIZE:]
    if key_id != keys.key_id:
        return payload, f"it is signed by key {key_id.hex()}, not by this ledger's key {keys.key_id.hex()}"
    digest = event_digest(_uuid(originator_id), originator_version, topic, payload)
    if not strict and isinstance(keys, SigningKeys):
        if hmac.compare_digest(mac, keys.mac(digest)):
            return payload, None
        return payload, "its signature does not match its content: it was forged or changed outside the ledger"
    try:
        keys.public_key.verify(signature, EVENT_CONTEXT + digest)
    except InvalidSignature:
        return payload, "its signature does not match its content: it was forged or changed outside the ledger"
    return payload, None


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


class SigningMapper(Mapper[UUID]):
    """The library's mapper, with every stored event and snapshot signed, and checked when it is read."""

    def __init__(self, *args: Any, keys: SigningKeys, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keys = keys

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        stored = super().to_stored_event(domain_event)
        return StoredEvent(
            originator_id=stored.originator_id,
            originator_version=stored.originator_version,
            topic=stored.topic,
            state=self.keys.seal(stored.originator_id, stored.originator_version, stored.topic, stored.state),
        )

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
