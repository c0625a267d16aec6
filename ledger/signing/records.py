"""Sealing the records of a save (one Ed25519 signature, a MAC each) and checking them again."""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.chain import ChainEnd, event_digest
from ledger.errors import SigningKeyError, TamperedRecordError
from ledger.signing.keys import (
    KEY_ID_SIZE,
    SIGNING_KEY_ENV,
    create_private_key,
    default_key_path,
    key_id_of,
    load_private_key,
)

MAGIC = b"\x00LS2"
"""A record written since each insert transaction signs the head it leaves (:meth:`SigningKeys.sign_head`): the
log's walk requires a signed head at or after it. Its signature and MAC are bound to this format, so it cannot
be passed off as a record of the earlier one."""
MAGIC_V1 = b"\x00LS1"
"""A record written before heads were signed: still read and checked, with no signed head required."""
SIGNATURE_SIZE, MAC_SIZE = 64, 16
HEADER_SIZE = len(MAGIC) + KEY_ID_SIZE + SIGNATURE_SIZE + MAC_SIZE + 4
MAX_GROUP = 0xFFFF
_KEY_AT = len(MAGIC)
_SIGNATURE_AT = _KEY_AT + KEY_ID_SIZE
_MAC_AT = _SIGNATURE_AT + SIGNATURE_SIZE
_INDEX_AT = _MAC_AT + MAC_SIZE
EVENT_CONTEXT = b"profile-ledger events v2\x00"
CONTEXTS = {MAGIC: EVENT_CONTEXT, MAGIC_V1: b"profile-ledger events v1\x00"}
HEAD_CONTEXT = b"profile-ledger head v1\x00"
MAC_CONTEXT = b"profile-ledger mac v1\x00"
NO_SIGNATURE = "it carries no signature: it was not written by the ledger"
FORGED = "it was forged or changed outside the ledger"


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

    @staticmethod
    def needs_signed_head(state: bytes) -> bool:
        """Whether a stored record was written when every insert transaction signed the head it left."""
        return bytes(state[:len(MAGIC)]) == MAGIC

    def head_problem(self, position: int, link: bytes, signature: bytes) -> str | None:
        """Why a signed head does not sign this link at this position (None: it does)."""
        if self.verify_statement(head_statement(position, link), signature):
            return None
        return (f"the head signed at position {position} does not match the chain there: the log up to there "
                "was rewritten (events removed, inserted or moved) and the chain recomputed")


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
        self._sealed_as: tuple[bytes, bytes, int] = (b"", b"", 0)  # the save's format, signature and size
        self._first = 0

    def feed(self, position: int, originator_id: Any, originator_version: int, topic: str,
             state: bytes) -> tuple[int, str] | None:
        record = Sealed.parse(state)
        if record is None:
            return position, NO_SIGNATURE
        if record.key_id != self.keys.key_id:
            return position, _other_key(record.key_id, self.keys.key_id)
        sealed_as = (record.magic, record.signature, record.count)
        if record.index != len(self._group) or (self._group and sealed_as != self._sealed_as):
            if self._group:
                return self._first, (f"the save that starts at position {self._first} is incomplete or out of "
                                     "order: an event was removed, inserted or moved")
            return position, f"it is event {record.index + 1} of a save whose earlier events are missing"
        if not self._group:
            self._first, self._sealed_as = position, sealed_as
        self._group.append(record.digest(originator_id, originator_version, topic))
        if len(self._group) < record.count:
            return None
        group, self._group = self._group, []
        message = CONTEXTS[record.magic] + struct.pack(">H", len(group)) + b"".join(group)
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
    """The service's key: signs what it stores and checks what it reads. Loaded when first needed; the default
    one is made by the first write."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self.named = not create  # by ``LEDGER_SIGNING_KEY``: never made here
        self._lock = threading.Lock()
        self._private: Ed25519PrivateKey | None = None
        self._keyed_hmac: Any = None  # keyed once; each MAC starts from a copy of it

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SigningKeys:
        configured = env.get(SIGNING_KEY_ENV)
        if configured:
            return cls(Path(configured), create=False)
        return cls(default_key_path(env))

    def __getattr__(self, name: str) -> Any:
        """``key_id`` and ``public_key``, once the key is loaded (on first use)."""
        if name in ("key_id", "public_key"):
            self._load()
            return self.__dict__[name]
        raise AttributeError(name)

    def _load(self, *, create: bool = False) -> Ed25519PrivateKey:
        """The private key; ``create``: make the default one if there is none yet (the first write does)."""
        if self._private is None:
            with self._lock:
                if self._private is None:
                    if not self.path.exists() and not self.named and not create:
                        raise SigningKeyError(
                            f"there is no event-signing key at {self.path} yet: set {SIGNING_KEY_ENV} to the key "
                            "this log was written with (the first write makes one there)", path=str(self.path)
                        )
                    try:
                        if self.path.exists() or self.named:
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
                    self._keyed_hmac = hmac.new(hashlib.sha256(MAC_CONTEXT + raw).digest(), digestmod=hashlib.sha256)
                    self._private = private
        return self._private

    def public(self) -> PublicKeyCheck:
        return PublicKeyCheck(self.public_key)

    def sign_statement(self, message: bytes) -> bytes:
        return self._load().sign(message)

    def record_check(self, *, strict: bool = False) -> RecordCheck:
        """The MAC of each record; ``strict``: each save's signature too."""
        return BothChecks(MacCheck(self), SignatureCheck(self)) if strict else MacCheck(self)

    def sign_head(self, position: int, link: bytes) -> bytes:
        """The signature of the chain's head an insert transaction leaves (its last position and link), stored
        beside the log in that transaction: it binds every event before it to its place in the log."""
        return self._load(create=True).sign(head_statement(position, link))

    def end_problem(self, end: ChainEnd, last_record: Callable[[], bytes]) -> str | None:
        """Why an insert may not sign a head past the log's end as it found it (None: it may). The last signed head
        must be at that end and sign its link: a head signed past an end that no genuine head covers would seal
        whatever the database's owner put there (events removed, inserted or moved, the chain recomputed, the heads
        past the change removed), and ``ledger verify`` would pass it. The empty log may go on, and so may one with
        no signed head whose last record asks for none (written before heads were signed)."""
        if end.position <= 0 or (end.head is None and not self.needs_signed_head(last_record())):
            return None
        head = end.head  # Ed25519 signs deterministically: this key's signature of the end is the one to find
        if head is not None and head.position == end.position and head.signature == self.sign_head(end.position,
                                                                                                   end.link):
            return None
        last = "there is none" if head is None else f"the last is at position {head.position}"
        return (f"the log was changed outside the ledger: no genuine signed head covers its end at position "
                f"{end.position} ({last}); nothing more is recorded until it is restored: run `ledger verify`")

    def seal(self, context: bytes, message: bytes) -> bytes:
        """A keyed digest (HMAC-SHA-256) of ``message`` for ``context``: what is kept beside the log (not in it)
        carries one, so that a row written there without this key is known for what it is."""
        self._load(create=True)
        mac = self._keyed_hmac.copy()
        mac.update(context + message)
        return mac.digest()

    def _mac(self, magic: bytes, digest: bytes, index_and_count: bytes, signature: bytes) -> bytes:
        mac = self._keyed_hmac.copy()
        mac.update(b"".join((b"" if magic == MAGIC_V1 else magic, digest, index_and_count, signature)))
        return mac.digest()[:MAC_SIZE]

    def seal_all(self, records: Sequence[tuple[Any, int, str, bytes]]) -> list[bytes]:
        """The stored states of the records of one save ``(originator id, version, topic, payload)``: one
        signature over them all, a MAC each."""
        private = self._load(create=True)
        count = len(records)
        if not 0 < count <= MAX_GROUP:
            return [state for start in range(0, count, MAX_GROUP)
                    for state in self.seal_all(records[start:start + MAX_GROUP])]
        digests = [event_digest(oid, version, topic, payload) for oid, version, topic, payload in records]
        signature = private.sign(EVENT_CONTEXT + struct.pack(">H", count) + b"".join(digests))
        states = []
        for index, (digest, (_, _, _, payload)) in enumerate(zip(digests, records)):
            index_and_count = struct.pack(">HH", index, count)
            mac = self._mac(MAGIC, digest, index_and_count, signature)
            states.append(b"".join((MAGIC, self.key_id, signature, mac, index_and_count, payload)))
        return states

    @staticmethod
    def key_id_in(state: bytes) -> bytes | None:
        """The id of the key a stored record says it is signed with (None: not a signed record)."""
        state = bytes(state)
        return state[_KEY_AT:_SIGNATURE_AT] if len(state) >= HEADER_SIZE and state[:_KEY_AT] in CONTEXTS else None

    def mac_problem(self, originator_id: Any, originator_version: int, topic: str,
                    state: bytes) -> tuple[bytes, str | None]:
        """The payload and, when the record is not this service's, why (by its MAC; on every read: kept lean)."""
        if self._private is None:
            self._load()
        if not isinstance(state, (bytes, bytearray, memoryview)) or not isinstance(topic, str):
            return b"", f"its columns hold values of another type (a NULL, text for bytes): {FORGED}"
        state = bytes(state)
        magic = state[:_KEY_AT]
        if len(state) < HEADER_SIZE or magic not in CONTEXTS:
            return b"", NO_SIGNATURE
        payload = state[HEADER_SIZE:]
        if state[_KEY_AT:_SIGNATURE_AT] != self.key_id:
            return payload, _other_key(state[_KEY_AT:_SIGNATURE_AT], self.key_id)
        digest = event_digest(originator_id, originator_version, topic, payload)
        mac = self._mac(magic, digest, state[_INDEX_AT:HEADER_SIZE], state[_SIGNATURE_AT:_MAC_AT])
        if not hmac.compare_digest(state[_MAC_AT:_INDEX_AT], mac):
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

    magic: bytes
    key_id: bytes
    signature: bytes
    mac: bytes
    index: int
    count: int
    payload: bytes

    @classmethod
    def parse(cls, state: bytes) -> Sealed | None:
        state = bytes(state)
        if len(state) < HEADER_SIZE or state[:_KEY_AT] not in CONTEXTS:
            return None
        index, count = struct.unpack_from(">HH", state, _INDEX_AT)
        if index >= count:
            return None
        key_id, signature, mac = state[_KEY_AT:_SIGNATURE_AT], state[_SIGNATURE_AT:_MAC_AT], state[_MAC_AT:_INDEX_AT]
        return cls(state[:_KEY_AT], key_id, signature, mac, index, count, state[HEADER_SIZE:])

    def digest(self, originator_id: Any, originator_version: int, topic: str) -> bytes:
        return event_digest(originator_id, originator_version, topic, self.payload)


def head_statement(position: int, link: bytes) -> bytes:
    return HEAD_CONTEXT + struct.pack(">q", position) + link


OTHER_KEY = "not by the key it is checked with"


def _other_key(found: bytes, expected: bytes) -> str:
    return f"it is signed by key {found.hex()}, {OTHER_KEY}, {expected.hex()}"
