"""Signed checkpoints: a statement, signed with the ledger's key, that the log's head was at a position and link.

Kept outside the database (a file, a ticket, a second system), a checkpoint lets anyone holding the public key
prove later that the log still extends it: the verifier recomputes the chain from the events and compares the
link at the checkpoint's position (``ledger verify --checkpoint FILE``). A database owner who rewrites the
history and recomputes the chain, or removes events from the log's end, cannot make a log that passes. Like a
Certificate Transparency signed tree head, or a client's verified state in immudb.

The file is JSON::

    {"format": "profile-ledger checkpoint v1", "position": 42, "link": "<hex>", "time": "<ISO 8601>",
     "key_id": "<hex>", "signature": "<hex Ed25519 over the other fields' canonical JSON>"}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any

from ledger.chain import GENESIS, ChainHead, VerifyReport
from ledger.errors import ValidationError
from ledger.signing import PublicKeyCheck, SigningKeys
from ledger.signing.records import OTHER_KEY

FORMAT = "profile-ledger checkpoint v1"
CONTEXT = b"profile-ledger checkpoint v1\x00"


@dataclass(frozen=True)
class Checkpoint:
    position: int
    link: str
    time: str
    key_id: str
    signature: str = ""
    format: str = FORMAT

    @classmethod
    def of(cls, report: VerifyReport, keys: SigningKeys) -> Checkpoint:
        """Sign the head of a log that was just verified."""
        if not report.ok:
            raise ValidationError("refusing to sign a checkpoint of a log that does not verify")
        unsigned = cls(
            position=report.head_position or 0,
            link=report.head_link or GENESIS.hex(),
            time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            key_id=keys.public().key_id.hex(),
        )
        return replace(unsigned, signature=keys.sign_statement(unsigned.statement()).hex())

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        try:
            document: Any = json.loads(text)
            if not isinstance(document, dict) or document.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT!r} document")
            checkpoint = cls(
                position=int(document["position"]), link=str(document["link"]), time=str(document["time"]),
                key_id=str(document["key_id"]), signature=str(document["signature"]),
            )
            if checkpoint.position < 0 or len(bytes.fromhex(checkpoint.link)) != 32:
                raise ValueError("a bad position or link")
        except (ValueError, KeyError, TypeError) as error:
            raise ValidationError(f"the checkpoint cannot be read: {error}", field="checkpoint") from None
        return checkpoint

    def statement(self) -> bytes:
        """What is signed: the canonical JSON of every field but the signature."""
        fields = {key: value for key, value in asdict(self).items() if key != "signature"}
        return CONTEXT + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def problem(self, keys: PublicKeyCheck) -> str | None:
        """Why the checkpoint is not one this ledger's key signed (None: it is)."""
        if self.key_id != keys.key_id.hex():
            return f"it is signed by key {self.key_id}, {OTHER_KEY}, {keys.key_id.hex()}"
        try:
            signature = bytes.fromhex(self.signature)
        except ValueError:
            signature = b""
        if not keys.verify_statement(self.statement(), signature):
            return "its signature does not match its content"
        return None

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.position, bytes.fromhex(self.link))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"
