"""The tamper-evident chain over the event log: how links are computed, and how the chain is verified.

Every stored event gets a companion row ``(position, digest, link)`` written in the same transaction:

* ``digest = sha256(originator_id[16] ‖ int8 version ‖ int4 len(topic) ‖ topic ‖ int4 len(state) ‖ state)``
* ``link   = sha256(previous link ‖ int8 position ‖ digest)`` (the first link starts from 32 zero bytes)

Verification walks both tables in position order and reports the first position where a row was altered,
removed, inserted or reordered. Pure functions plus a walker over rows; the SQL lives in ``recorders``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from uuid import UUID

GENESIS = bytes(32)


def event_digest(originator_id: UUID, originator_version: int, topic: str, state: bytes) -> bytes:
    topic_bytes = topic.encode("utf-8")
    return hashlib.sha256(
        originator_id.bytes
        + struct.pack(">q", originator_version)
        + struct.pack(">i", len(topic_bytes))
        + topic_bytes
        + struct.pack(">i", len(state))
        + bytes(state)
    ).digest()


def next_link(previous: bytes, position: int, digest: bytes) -> bytes:
    return hashlib.sha256(previous + struct.pack(">q", position) + digest).digest()


@dataclass(frozen=True)
class StoredRow:
    position: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes


@dataclass(frozen=True)
class ChainRow:
    position: int
    digest: bytes
    link: bytes


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    checked: int
    head_position: int | None
    head_link: str | None
    problem: str | None = None  # altered | removed | inserted | reordered | broken_link
    position: int | None = None
    detail: str | None = None


def verify(
    events: Iterable[StoredRow], chain: Iterable[ChainRow], find_digest: Callable[[bytes], int | None]
) -> VerifyReport:
    """Walk events and chain rows (both in position order) and report the first problem, if any.

    ``find_digest`` looks a digest up in the whole chain (to tell a reordered row from an altered one).
    """
    chain_iter: Iterator[ChainRow] = iter(chain)
    link, checked, head = GENESIS, 0, None
    pending = next(chain_iter, None)
    for event in events:
        if pending is not None and pending.position < event.position:
            return _report(checked, head, link, "removed", pending.position,
                           f"the event at position {pending.position} is missing from the log")
        if pending is None or pending.position > event.position:
            return _report(checked, head, link, "inserted", event.position,
                           f"position {event.position} has no chain link: it was not written by the ledger")
        digest = event_digest(event.originator_id, event.originator_version, event.topic, event.state)
        if digest != pending.digest:
            elsewhere = find_digest(digest)
            if elsewhere is not None and elsewhere != event.position:
                return _report(checked, head, link, "reordered", event.position,
                               f"position {event.position} holds the event recorded at position {elsewhere}")
            return _report(checked, head, link, "altered", event.position,
                           f"the event stored at position {event.position} was changed")
        link = next_link(link, event.position, digest)
        if link != pending.link:
            return _report(checked, head, link, "broken_link", event.position,
                           f"the chain link at position {event.position} does not follow from the one before")
        checked, head = checked + 1, event.position
        pending = next(chain_iter, None)
    if pending is not None:
        return _report(checked, head, link, "removed", pending.position,
                       f"the event at position {pending.position} is missing from the log")
    return VerifyReport(ok=True, checked=checked, head_position=head, head_link=link.hex() if head else None)


def _report(checked: int, head: int | None, link: bytes, problem: str, position: int, detail: str) -> VerifyReport:
    return VerifyReport(
        ok=False, checked=checked, head_position=head, head_link=link.hex() if head else None,
        problem=problem, position=position, detail=detail,
    )
