"""Verifying the log: full walks, incremental walks from the last verified head, and the snapshots.

A full walk recomputes the whole chain from the events and checks every event's Ed25519 signature with the
public key. An incremental walk starts from the head this process verified last (its position, link and each
stream's last version, kept in memory): it checks that the chain still holds that link there (a recomputed
chain does not) and walks only the events after it, checking the service's MAC (:mod:`ledger.signing`), so
its cost is proportional to what is new. A full walk must pass through that head too. The head is kept when a
walk finds a problem (only a walk that passes moves it), so a log cut or rewritten under it keeps failing every
later walk until the process restarts. Both check every snapshot (a full walk its signature, an
incremental one its MAC); a full walk with the ledger's key also checks that it holds what its stream's events
give.

One walk at a time per process: a caller that would wait longer than ``wait`` seconds gets
:class:`VerifyBusyError` (answered 429 with ``Retry-After``); :meth:`LogVerifier.walk_aside` walks what is new beside
the walk under way.
"""

from __future__ import annotations

import threading
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import Any, Protocol
from uuid import UUID

from ledger.chain import ChainHead, StoredRow, VerifyReport, Walk
from ledger.checkpoint import Checkpoint
from ledger.errors import BusyError
from ledger.signing import PublicKeyCheck, RecordCheck, SigningKeys


class SnapshotReplay(Protocol):
    def problem(self, row: StoredRow) -> str | None:
        """Whether the snapshot differs from its stream's events replayed up to its version (a genuine snapshot
        of another database signed with the same key does); fed snapshots in stream and version order."""


class VerifyBusyError(BusyError):
    """Another verification is running in this process."""


@dataclass(frozen=True)
class VerifiedHead:
    head: ChainHead
    streams: dict[UUID, int]


class LogVerifier:
    def __init__(self, recorder: Any, snapshot_recorder: Any | None, keys: SigningKeys, *,
                 snapshot_topics: frozenset[str], snapshot_replay: Callable[[], SnapshotReplay],
                 walked: Callable[[VerifyReport, Mapping[UUID, int]], None] = lambda *_: None) -> None:
        self.recorder = recorder
        self.walked = walked
        """Told how each walk with the ledger's key (and no checkpoint) ended, with the last version of each stream it
        met."""
        self.snapshot_recorder = snapshot_recorder
        self.keys = keys
        self.snapshot_topics = snapshot_topics
        self.snapshot_replay = snapshot_replay
        self._lock = threading.Lock()
        self._verified: VerifiedHead | None = None
        self._failed: VerifyReport | None = None  # the first problem a walk with the ledger's key found
        self._reached = 0  # the furthest position this process saw the log reach (see saw_log_reach)

    def saw_log_reach(self, position: int) -> None:
        """The log held an event at ``position`` (this process saved it, applied it to a read model, or saw it as
        the end of the log when a walk began): a walk with the ledger's key that finds the log ending before it
        reports it ``truncated``. So a walk beside another one under way, which may take half a minute, finds the
        end the other saw cut, though only the other would have met what was cut."""
        if position > self._reached:
            self._reached = position

    def verify(
        self,
        *,
        full: bool = True,
        public_key: PublicKeyCheck | None = None,
        checkpoint: Checkpoint | None = None,
        wait: float | None = None,
        snapshots: bool = True,
    ) -> VerifyReport:
        """Walk the log (all of it when ``full``, else what is new since the last verified head) and the
        snapshots (unless not ``snapshots``); with ``checkpoint``, also prove that the log still extends it.
        ``public_key``: check the signatures with this key instead of the ledger's own (a full walk)."""
        if not self._lock.acquire(timeout=-1 if wait is None else wait):
            raise VerifyBusyError("another verification of the log is running; try again shortly")
        try:
            return self._verify(full or public_key is not None or checkpoint is not None, public_key, checkpoint,
                                snapshots)
        finally:
            self._lock.release()

    def walk_aside(self) -> VerifyReport:
        """What is new since the last verified head, walked without waiting for the walk under way and without
        moving that head or keeping what it finds (the walk under way, or the next, does): for a read that may
        neither wait behind a long walk nor skip one (the tokens'). ``walked`` is told how it ended."""
        return self._verify(False, None, None, False, aside=True)

    def _verify(self, full: bool, public_key: PublicKeyCheck | None, checkpoint: Checkpoint | None,
                with_snapshots: bool, *, aside: bool = False) -> VerifyReport:
        if checkpoint is not None:
            problem = checkpoint.problem(public_key or self.keys)
            if problem is not None:
                return VerifyReport(ok=False, checked=0, head_position=None, head_link=None, problem="forged",
                                    position=checkpoint.position, detail=f"the checkpoint is refused: {problem}")
        own = public_key is None and checkpoint is None  # a walk with the ledger's key, whose findings it keeps
        failed_before = self._failed if own else None
        if failed_before is not None and not full:  # (the problem may lie before the head, where it would not look)
            return failed_before
        reached = self._reached if own else 0  # as known before this walk began: it reads at least as far
        if own:
            self.saw_log_reach(int(self.recorder.max_notification_id() or 0))
        remembered = self._verified
        verified = None if full else remembered
        # an incremental walk writes the streams it meets over those verified before, which it leaves as they are
        streams: MutableMapping[UUID, int] = ChainMap({}, verified.streams) if verified else {}
        expect = [checkpoint.head] if checkpoint else []
        if full and remembered is not None:
            expect.append(remembered.head)  # a full walk must not forget what this process verified before
        walk = Walk(
            start=verified.head if verified else None,
            records=self._record_check(full, public_key),
            heads=public_key or self.keys,
            streams=streams,
            expect=tuple(expect),
        )
        snapshots = None if self.snapshot_recorder is None or not with_snapshots else (
            self.snapshot_recorder,
            lambda report, rows: self._verify_snapshots(report, rows, full, public_key, streams),
        )
        report = self.recorder.verify_chain(walk, snapshots)
        if report.ok and (report.head_position or 0) < reached:
            report = replace(report, ok=False, problem="truncated", position=reached,
                             detail=f"the log ends at position {report.head_position or 0}, before position "
                                    f"{reached}, which this process saw it reach: events were removed from its end")
        met = streams.maps[0] if isinstance(streams, ChainMap) else streams  # the streams this walk met
        if report.ok and public_key is None and not aside:  # verified with the ledger's key: later walks start here
            # a new mapping: a walk aside reads a verified head's streams as they were verified with it
            every = met if verified is None else {**verified.streams, **met}
            self._verified = VerifiedHead(ChainHead(report.head_position or 0, bytes.fromhex(report.head_link)
                                                    if report.head_link else b""), every)
        if own and not report.ok and failed_before is None and not aside:
            self._failed = report
        if own and report.ok and failed_before is not None:
            report = failed_before  # put back as it was since: a log once tampered with stays reported until restart
        if own:
            self.walked(report, met)
        return report  # on a problem the head verified before is kept: every later walk finds it again

    def _record_check(self, full: bool, public_key: PublicKeyCheck | None) -> RecordCheck:
        """The auditor's public key checks signatures; the service checks MACs, and signatures in full walks."""
        if public_key is not None:
            return public_key.record_check()
        return self.keys.record_check(strict=full)

    def _verify_snapshots(self, report: VerifyReport, rows: Iterable[StoredRow], full: bool,
                          public_key: PublicKeyCheck | None, streams: Mapping[UUID, int]) -> VerifyReport:
        """The first snapshot that was not signed by the ledger, is no snapshot (a genuine event copied into the
        snapshots table is signed too) or lies past the end of its stream (the walk's ``report`` passed; the
        snapshots are read as of the same moment as the log it walked)."""
        replay = self.snapshot_replay() if full and public_key is None else None  # its states need the key
        for row in rows:  # each snapshot is signed on its own
            check = self._record_check(full, public_key)
            found = check.feed(0, row.originator_id, row.originator_version, row.topic, row.state) or check.finish()
            problem = None if found is None else found[1]
            last = streams.get(row.originator_id, 0)
            if problem is None and row.topic not in self.snapshot_topics:
                problem = f"its topic {row.topic!r} is no snapshot's"
            elif problem is None and row.originator_version > last:  # the stream's last events were removed
                return replace(report, ok=False, problem="truncated", position=None,
                               detail=f"stream {row.originator_id} ends at version {last}, before its snapshot at "
                                      f"version {row.originator_version}: its last events were removed from the log")
            elif problem is None and replay is not None:
                problem = replay.problem(row)
            if problem is not None:
                return replace(
                    report, ok=False, problem="snapshot_forged", position=None,
                    detail=f"the snapshot of {row.originator_id} at version {row.originator_version} is refused "
                           f"(never used; its aggregate is replayed from its events): {problem}",
                )
        return report
