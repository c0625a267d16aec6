"""Rebuilding the read models as a job: started by ``POST /api/ledger/rebuild`` (202), polled at its URL.

One rebuild runs at a time across every process on the database (``projections.schema.hold_rebuild_lock``);
a second request meanwhile answers 409 ``rebuild_in_progress``. Jobs are kept in a table beside the log, so any
server on the database answers for them; a job whose server stopped before it ended (the lock let go, the job
still running) is reported failed.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Literal

import msgspec

from ledger.outages import is_database_unavailable
from ledger.settings import Database
from ledger.side_tables import SideTable
from projections.errors import RebuildInProgressError

log = logging.getLogger("ledger.api")

KEPT = 20
PROGRESS_EVERY_S = 0.5  # how often a running job records how far it has read
JOB_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex
RECORD_ATTEMPTS, RECORD_RETRY_S = 16, 2.0  # how long a job that ended tries to record how (about 30 s)
DATABASE_LOST = ("the database became unreachable during the rebuild; the read models are as they were before it: "
                 "start it again once the database is back")


class RebuildProgress(msgspec.Struct, kw_only=True):
    """How far a rebuild has read the log (written at most every :data:`PROGRESS_EVERY_S`, and as it ends)."""

    position: int
    """The log position it has read and applied up to."""
    head: int
    """The log's end as it last looked: it reads up to there (what is recorded meanwhile is applied as it swaps
    the rebuilt read models in)."""


class RebuildJob(msgspec.Struct, kw_only=True):
    """A rebuild of every read model from position 0 (queries keep being answered meanwhile)."""

    id: str
    state: Literal["running", "succeeded", "failed"]
    url: str
    """Where to poll this job."""
    started_at: datetime
    started_by: str | None = None
    """The actor who started it (the API's authenticated token; in open mode, ``X-Actor``)."""
    finished_at: datetime | None = None
    progress: RebuildProgress | None = None
    """How far it has read the log (none until its first batch is read)."""
    positions: dict[str, int] | None = None
    """When it succeeded: the log position each read model was rebuilt up to."""
    parked: dict[str, int] | None = None
    """When it succeeded: the events each read model could not apply and set aside, if any (`GET /ready` and
    `ledger projections` show them; `ledger rebuild` exits 1 for them)."""
    error: str | None = None
    """When it failed: why."""


class RebuildJobs:
    """The jobs, in a table beside the log that every server on the database reads (the last :data:`KEPT`)."""

    TABLE = "ledger_rebuild_jobs"

    def __init__(self, database: Database, datastore: Any, parked_counts: Callable[[], dict[str, int]] = dict) -> None:
        self.database = database
        self.parked_counts = parked_counts
        self.table = SideTable(datastore, self.TABLE, "id text PRIMARY KEY, started_at text NOT NULL, job text NOT NULL")

    def start(self, started_by: str | None = None) -> RebuildJob:
        """Start a rebuild in a thread (raises ``RebuildInProgressError`` while one runs anywhere)."""
        from projections.schema import hold_rebuild_lock

        release = hold_rebuild_lock(self.database)
        try:
            job_id = uuid.uuid4().hex  # a JOB_ID
            job = RebuildJob(id=job_id, state="running", url=f"/api/ledger/rebuilds/{job_id}",
                             started_at=datetime.now(timezone.utc), started_by=started_by)
            self.table.execute(
                ("INSERT INTO {table} (id, started_at, job) VALUES (?, ?, ?)",
                 (job.id, job.started_at.isoformat(), msgspec.json.encode(job).decode())),
                ("DELETE FROM {table} WHERE id NOT IN (SELECT id FROM {table} ORDER BY started_at DESC LIMIT ?)",
                 (KEPT,)),
            )
        except BaseException:
            release()
            raise
        log.info("rebuild %s started by %s", job.id, started_by)
        threading.Thread(target=self._run, args=(job, release), daemon=True, name=f"rebuild-{job_id[:8]}").start()
        return job

    def get(self, job_id: str) -> RebuildJob | None:
        if not JOB_ID.fullmatch(job_id):  # never one of ours (and text PostgreSQL would refuse, such as a NUL)
            return None
        job = self._read(job_id)
        if job is None or job.state != "running":
            return job
        from projections.schema import hold_rebuild_lock

        try:  # a running job holds the database's lock until it has written how it ended
            release = hold_rebuild_lock(self.database)
        except RebuildInProgressError:
            return job
        try:
            job = self._read(job_id)
            if job is not None and job.state == "running":  # its server stopped before it ended
                job.state, job.error = "failed", ("the server running it stopped, or lost the database, before "
                                                  "it recorded how it ended: start it again")
                job.finished_at = datetime.now(timezone.utc)
                self._write(job)
            return job
        finally:
            release()

    def _read(self, job_id: str) -> RebuildJob | None:
        row = self.table.one("SELECT job FROM {table} WHERE id = ?", (job_id,))
        return None if row is None else msgspec.json.decode(row[0], type=RebuildJob)

    def _write(self, job: RebuildJob) -> None:
        self.table.execute(("UPDATE {table} SET job = ? WHERE id = ?", (msgspec.json.encode(job).decode(), job.id)))

    def _run(self, job: RebuildJob, release: Callable[[], None]) -> None:
        from projections.runner import rebuild

        written = time.monotonic()

        def advanced(position: int, head: int) -> None:
            nonlocal written
            job.progress = RebuildProgress(position=position, head=head)
            if time.monotonic() - written >= PROGRESS_EVERY_S:
                written = time.monotonic()
                try:
                    self._write(job)
                except Exception as error:  # noqa: BLE001 - the rebuild goes on; its end is recorded as it ends
                    log.debug("rebuild %s: progress not recorded: %s", job.id, error)

        try:
            job.positions = dict(rebuild(self.database, progress=False, on_progress=advanced))
            parked = self.parked_counts()
            job.parked = {name: parked[name] for name in job.positions if parked.get(name)} or None
            job.state = "succeeded"
        except Exception as error:  # noqa: BLE001 - recorded on the job, which the client polls
            log.exception("rebuild %s failed", job.id)
            job.error, job.state = (DATABASE_LOST if is_database_unavailable(error)
                                    else f"{type(error).__name__}: {error}"), "failed"
        job.finished_at = datetime.now(timezone.utc)
        try:
            for attempt in range(1, RECORD_ATTEMPTS + 1):  # the database may be on its way back
                try:
                    self._write(job)
                    break
                except Exception as error:  # noqa: BLE001 - a poll then finds the job's server gone
                    if attempt == RECORD_ATTEMPTS or not is_database_unavailable(error):
                        log.exception("rebuild %s: could not record how it ended", job.id)
                        break
                    time.sleep(RECORD_RETRY_S)
        finally:
            release()
