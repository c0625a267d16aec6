"""The tamper-evident chain over the event log: how links are computed, and how the chain is verified.

Every stored event gets a companion row ``(position, digest, link)`` written in the same transaction:

* ``digest = sha256(originator_id[16] ‖ int8 version ‖ int4 len(topic) ‖ topic ‖ int4 len(state) ‖ state)``
* ``link   = sha256(previous link ‖ int8 position ‖ digest)`` (the first link starts from 32 zero bytes)

Verification walks both tables in position order and reports the first position where a row was altered,
removed, inserted or reordered, where a row carries no valid signature (:mod:`ledger.signing`: the chain
alone cannot tell a row the service wrote from one the database's owner inserted and the trigger linked),
where a signed head no longer signs the recomputed link or a record has none after it (the chain rewritten
without the key), or where the log no longer extends a signed checkpoint (:mod:`ledger.checkpoint`). Pure
functions plus a walker over rows; the SQL lives in ``recorders``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

GENESIS = bytes(32)


def event_digest(originator_id: UUID | str, originator_version: int, topic: str, state: bytes) -> bytes:
    """``originator_id``: the stream's UUID, or its text (as a stored event may hold it)."""
    stream = originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
    topic_bytes = topic.encode("utf-8")
    return hashlib.sha256(b"".join((
        stream.bytes,
        struct.pack(">qi", originator_version, len(topic_bytes)),
        topic_bytes,
        struct.pack(">i", len(state)),
        state,
    ))).digest()


def next_link(previous: bytes, position: int, digest: bytes) -> bytes:
    return hashlib.sha256(previous + struct.pack(">q", position) + digest).digest()


@dataclass(frozen=True)
class StoredRow:
    position: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes
    id_as_written: bool = True  # False: the stream id is stored in another spelling (SQLite keeps it as text)

    @classmethod
    def read(cls, position: int, originator_id: UUID, originator_version: Any, topic: Any, state: Any,
             id_as_written: bool = True) -> StoredRow:
        """A row as the database holds it, whatever its owner put in its columns: a value of another type (NULL,
        text for bytes, a fraction for a version) becomes one that no record has, so the walk reports the event
        altered (or forged) rather than failing."""
        return cls(position, originator_id,
                   originator_version if isinstance(originator_version, int) else -1,
                   topic if isinstance(topic, str) else "",
                   stored_bytes(state), id_as_written)


def stored_bytes(value: Any) -> bytes:
    """A bytes column as the database holds it; a NULL or a value of another type: no bytes (which no record is)."""
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else b""


@dataclass(frozen=True)
class ChainRow:
    position: int
    digest: bytes
    link: bytes


@dataclass(frozen=True)
class SignedHead:
    """The signature an insert transaction stored of the head it left
    (:meth:`ledger.signing.SigningKeys.sign_head`)."""

    position: int
    signature: bytes


@dataclass(frozen=True)
class ChainHead:
    """A verified point of the chain: the link after the event at ``position`` (0: the empty log)."""

    position: int
    link: bytes


@dataclass(frozen=True)
class ChainEnd:
    """The log's end as an insert transaction finds it under the lock: the chain's last position and link (0 and
    :data:`GENESIS`: the empty log), and the last signed head (None: there is none)."""

    position: int
    link: bytes
    head: SignedHead | None


# altered | removed | inserted | reordered | broken_link | forged | diverged | unsigned | truncated | snapshot_forged
Problem = str


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    checked: int
    head_position: int | None
    head_link: str | None
    problem: Problem | None = None
    position: int | None = None
    detail: str | None = None
    since: int | None = None  # an incremental walk: the positions up to this one were verified before

    def tampered(self) -> str:
        """The failed walk in one line: ``TAMPERED: <problem> at position <n>: <detail>``."""
        where = f" at position {self.position}" if self.position is not None else ""
        return f"TAMPERED: {self.problem}{where}: {self.detail}"


@dataclass
class Walk:
    """What a walk starts from and checks besides the chain.

    * ``start``: a head verified before (the walk reads only the events after it; None: from the first event);
    * ``records``: checks each row's signature (:class:`ledger.signing.RecordCheck`: ``feed`` and ``finish``
      name the first row the ledger did not write, and why);
    * ``heads``: checks the signed heads (:class:`ledger.signing.PublicKeyCheck`): each must sign the link
      recomputed at its position, and every record that asks for one must have one at or after it (None: not
      checked);
    * ``streams``: each stream's last version seen so far; complete from the log's start, so a stream first
      met must start at version 1 and every next event must be the next version (None: not checked);
    * ``expect``: heads verified before that the log must still extend (a signed checkpoint, the head this
      process verified last): each link recomputed from the events.
    """

    start: ChainHead | None = None
    records: Any = None
    heads: Any = None
    streams: dict[UUID, int] | None = None
    expect: tuple[ChainHead, ...] = ()


def verify(
    events: Iterable[StoredRow],
    chain: Iterable[ChainRow],
    find_digest: Callable[[bytes], int | None],
    walk: Walk,
    signed_heads: Iterable[SignedHead],
) -> VerifyReport:
    """Walk events, chain rows and signed heads (each in position order) and report the first problem, if any.

    ``find_digest`` looks a digest up in the whole chain (to tell a reordered row from an altered one).
    """
    chain_iter: Iterator[ChainRow] = iter(chain)
    start = walk.start
    link, head = (GENESIS, None) if start is None or start.position == 0 else (start.link, start.position)
    since = None if start is None else start.position
    checked = 0
    streams = walk.streams
    expected = sorted((head for head in walk.expect if head.position > 0), key=lambda head: head.position)
    expect = expected.pop(0) if expected else None  # the empty log (position 0): every log extends it

    def report(problem: str, position: int, detail: str) -> VerifyReport:
        return VerifyReport(
            ok=False, checked=checked, head_position=head, head_link=link.hex() if head else None,
            problem=problem, position=position, detail=detail, since=since,
        )

    heads = walk.heads
    signed_iter = iter(signed_heads)
    signed = next(signed_iter, None)
    unsigned_from: int | None = None  # the first event that asks for a signed head and has none yet

    pending = next(chain_iter, None)
    for event in events:
        if pending is not None and pending.position < event.position:
            return report("removed", pending.position,
                          f"the event at position {pending.position} is missing from the log")
        if pending is None or pending.position > event.position:
            return report("inserted", event.position,
                          f"position {event.position} has no chain link: it was not written by the ledger")
        if not event.id_as_written:
            return report("altered", event.position, f"the stream id of the event at position {event.position} was "
                                                     "re-spelled: its stream's readers no longer find it")
        digest = event_digest(event.originator_id, event.originator_version, event.topic, event.state)
        if digest != pending.digest:
            elsewhere = find_digest(digest)
            if elsewhere is not None and elsewhere != event.position:
                return report("reordered", event.position,
                              f"position {event.position} holds the event recorded at position {elsewhere}")
            return report("altered", event.position, f"the event stored at position {event.position} no longer "
                                                     "matches its chain row: the event or the chain row was changed")
        following = next_link(link, event.position, digest)
        if following != pending.link:
            return report("broken_link", event.position,
                          f"the chain link at position {event.position} does not follow from the one before (a "
                          "link was changed, or an event was removed before it together with its chain row)")
        if walk.records is not None:
            found = walk.records.feed(event.position, event.originator_id, event.originator_version, event.topic,
                                      event.state)
            if found is not None:
                return report("forged", found[0], f"the event at position {found[0]} is refused: {found[1]}")
        if streams is not None:
            last = streams.get(event.originator_id, 0)
            if event.originator_version != last + 1:
                kind = "removed" if event.originator_version > last + 1 else "reordered"
                cause = "an event before it was removed" if kind == "removed" else "its events were reordered"
                return report(kind, event.position,
                              f"stream {event.originator_id} goes from version {last} to "
                              f"{event.originator_version} at position {event.position}: {cause}")
            streams[event.originator_id] = event.originator_version
        if heads is not None:
            if unsigned_from is None and heads.needs_signed_head(event.state):
                unsigned_from = event.position
            if signed is not None and signed.position < event.position:
                return report("removed", signed.position, f"the event at position {signed.position}, whose head "
                                                          "was signed, is missing from the log")
            if signed is not None and signed.position == event.position:
                problem = heads.head_problem(event.position, following, signed.signature)
                if problem is not None:
                    return report("diverged", event.position, problem)
                unsigned_from, signed = None, next(signed_iter, None)
        while expect is not None and event.position >= expect.position:
            if event.position > expect.position or following != expect.link:
                return report("diverged", expect.position,
                              f"the log no longer extends the head verified at position {expect.position}: "
                              "its history up to there was rewritten")
            expect = expected.pop(0) if expected else None
        link, checked, head = following, checked + 1, event.position
        pending = next(chain_iter, None)
    if pending is not None:
        return report("removed", pending.position,
                      f"the event at position {pending.position} is missing from the log")
    found = None if walk.records is None else walk.records.finish()
    if found is not None:
        return report("forged", found[0], f"the event at position {found[0]} is refused: {found[1]}")
    if heads is not None and signed is not None:
        return report("truncated", signed.position,
                      f"the log ends at position {head or 0}, before the head signed at position {signed.position}: "
                      "events were removed from its end")
    if unsigned_from is not None:
        return report("unsigned", unsigned_from,
                      f"no signed head covers the events from position {unsigned_from} on (each insert signs the head "
                      "it leaves): the head's signature was removed, or these events inserted or moved since")
    if expect is not None:
        return report("truncated", expect.position,
                      f"the log ends at position {head or 0}, before the head verified at position "
                      f"{expect.position}: events were removed from its end")
    return VerifyReport(ok=True, checked=checked, head_position=head, head_link=link.hex() if head else None,
                        since=since)
