"""The event-signing key's file: where it is, reading it, and making one for the first write."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNING_KEY_ENV = "LEDGER_SIGNING_KEY"
DEFAULT_KEY_DIR = ".ledger"
DEFAULT_KEY_FILE = "signing-key.pem"
KEY_ID_SIZE = 8

logger = logging.getLogger("ledger.signing")


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
    draft = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    try:
        os.link(draft, path)  # appears whole, or not at all when another process made one first
    except FileExistsError:
        return load_private_key(path)
    finally:
        draft.unlink()
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
