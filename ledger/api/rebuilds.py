"""Rebuilding the read models as a job: started by ``POST /api/ledger/rebuild`` (202), polled at its URL.

One rebuild runs at a time across every process on the database (``projections.schema.hold_rebuild_lock``);
a second request meanwhile answers 409 ``rebuild_in_progress``. Jobs are kept in the memory of the server
that runs them (the last :data:`KEPT` of them).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Literal

import msgspec

from ledger.settings import Database

log = logging.getLogger("ledger.api")

KEPT = 20


class RebuildJob(msgspec.Struct, kw_only=True):
    """A rebuild of every read model from position 0 (queries keep being answered meanwhile)."""

    id: str
    state: Literal["running", "succeeded", "failed"]
    url: str
    """Where to poll this job."""
    started_at: datetime
    finished_at: datetime | None = None
    positions: dict[str, int] | None = None
    """When it succeeded: the log position each read model was rebuilt up to."""
    parked: dict[str, int] | None = None
    """When it succeeded: the events each read model could not apply and set aside, if any (`GET /ready` and
    `ledger projections` show them; `ledger rebuild` exits 1 for them)."""
    error: str | None = None
    """When it failed: why."""


class RebuildJobs:
    def __init__(self, database: Database, parked_counts: Callable[[], dict[str, int]] = dict) -> None:
        self.database = database
        self.parked_counts = parked_counts
        self._jobs: OrderedDict[str, RebuildJob] = OrderedDict()
        self._lock = threading.Lock()

    def start(self) -> RebuildJob:
        """Start a rebuild in a thread (raises ``RebuildInProgressError`` while one runs anywhere)."""
        from projections.schema import hold_rebuild_lock

        release = hold_rebuild_lock(self.database)
        job_id = uuid.uuid4().hex
        job = RebuildJob(id=job_id, state="running", url=f"/api/ledger/rebuilds/{job_id}",
                         started_at=datetime.now(timezone.utc))
        with self._lock:
            self._jobs[job_id] = job
            while len(self._jobs) > KEPT:
                self._jobs.popitem(last=False)
        threading.Thread(target=self._run, args=(job, release), daemon=True, name=f"rebuild-{job_id[:8]}").start()
        return job

    def get(self, job_id: str) -> RebuildJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _run(self, job: RebuildJob, release: object) -> None:
        from projections.runner import rebuild

        try:
            job.positions = dict(rebuild(self.database, progress=False))
            parked = self.parked_counts()
            job.parked = {name: parked[name] for name in job.positions if parked.get(name)} or None
            job.state = "succeeded"
        except Exception as error:  # noqa: BLE001 - recorded on the job, which the client polls
            log.exception("rebuild %s failed", job.id)
            job.error, job.state = f"{type(error).__name__}: {error}", "failed"
        finally:
            job.finished_at = datetime.now(timezone.utc)
            release()  # type: ignore[operator]
