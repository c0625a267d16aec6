"""Signed events: every stored event and snapshot is signed (Ed25519) with a key the database never sees.

The chain (:mod:`ledger.chain`) proves that rows were not changed after they were linked; it cannot prove who
wrote them, because on PostgreSQL the links are computed inside the database. The signature does: a row
inserted or edited through SQL, even one the chain trigger links, carries no valid signature.

One signature covers the events of one save (they are stored contiguously, in one transaction): a command
that records three events signs once. Stored state of a signed record::

    MAGIC (4) ‖ key id (8) ‖ Ed25519 signature (64) ‖ MAC (16) ‖ index (2) ‖ count (2) ‖ payload

* the signature is over ``"profile-ledger events v1\0" ‖ count ‖ digest₀ ‖ … ‖ digestₙ₋₁`` where each
  digest is ``event_digest(originator id, version, topic, payload)`` (:mod:`ledger.chain`): it binds every
  event of the save to its stream, version, type and content, in order; each record says which of how many
  it is;
* ``MAGIC`` is ``\0LS2``; records written before heads were signed carry ``\0LS1`` and the ``v1`` context
  (still read and checked; the format is bound into the signature and the MAC, so neither passes for the other);
* the key id is the first 8 bytes of ``sha256(raw public key)``;
* the MAC is ``HMAC-SHA256(k, digest ‖ index ‖ count ‖ signature)`` truncated to 16 bytes, with ``k``
  derived from the private key: the service checks it on every read (a microsecond or two, against some 80 µs
  for an Ed25519 check, and without the other events of the save), while anyone holding only the public key
  checks the signatures by walking the log (``ledger verify --public-key``). Neither can be made without the
  private key; the service's own walks check both.

A save's signature binds its events to their streams and versions, not to their places in the log. What does
is the *signed head*: each insert transaction signs ``"profile-ledger head v1\0" ‖ int8 position ‖ link`` for
the last event it inserted (:meth:`SigningKeys.sign_head`) and stores the signature beside the log in the same
transaction. The link at a position commits to every event before it, so events removed, inserted or moved
before a signed head (and the chain recomputed) leave a head whose signature no longer matches, and every
record of the current format must have a signed head at or after it: without the key, only the log's tail
after the last genuine head can be cut (which a kept checkpoint shows).

The key: ``LEDGER_SIGNING_KEY`` names a file holding an Ed25519 private key (PEM PKCS#8, or the raw 32
bytes). Unset, the key is ``.ledger/signing-key.pem`` beside the SQLite file (in the working directory for
PostgreSQL), created with mode 0600 by the first write, with a warning (reads never make one). Every process
writing to one database must use the same key.
"""

from ledger.signing.keys import SIGNING_KEY_ENV, create_private_key, load_public_key, public_key_pem
from ledger.signing.records import HEADER_SIZE, MAC_SIZE, PublicKeyCheck, RecordCheck, SigningKeys
from ledger.signing.store import CheckedSnapshotStore, SigningEventStore, SigningMapper

__all__ = [
    "HEADER_SIZE",
    "MAC_SIZE",
    "SIGNING_KEY_ENV",
    "CheckedSnapshotStore",
    "PublicKeyCheck",
    "RecordCheck",
    "SigningEventStore",
    "SigningKeys",
    "SigningMapper",
    "create_private_key",
    "load_public_key",
    "public_key_pem",
]
