"""``/api/ledger``: the log as a whole: verify its tamper-evident chain (reader), rebuild the read models (admin).

Verification is incremental: this process remembers the head it verified last and walks only the events after
it, so a reader's request costs what is new. ``?full=true`` walks the whole log (admin only: its cost grows
with the log). One walk runs at a time per process: an incremental caller waits up to a second for the
running one (then has little left to walk), a full walk asked for while another walk runs, or a caller that
waited in vain, is answered 429 with ``Retry-After``.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter
from litestar.status_codes import HTTP_202_ACCEPTED

from ledger.access import role_allows
from ledger.api.auth import principal_of, requires
from ledger.api.errors import BUSY, CONFLICT, INVALID, NOT_FOUND, responses
from ledger.api.runtime import WALK_WAIT_SECONDS, Runtime
from ledger.api.rebuilds import RebuildJob
from ledger.api.schemas import StartRebuild, VerifyResult
from ledger.application import ProfileLedger
from ledger.domainmodel import CommandContext
from ledger.errors import NotFoundError, PermissionDeniedError
from ledger.states import convert


class LedgerController(Controller):
    path = "/api/ledger"
    tags = ["ledger"]

    @get(
        "/verify",
        summary="Walk the tamper-evident chain and the signatures (incremental unless `full`); `ok` is false and "
        "`position` names the first tampered position",
        sync_to_thread=True,
        opt=requires("reader"),
        responses=responses(BUSY),
    )
    def verify(
        self,
        request: Request[Any, Any, Any],
        ledger: NamedDependency[ProfileLedger],
        full: bool = Parameter(default=False, description="Walk the whole log, not only what is new since the "
                               "last verification in this process (admin; one at a time: 429 when another "
                               "walk runs past a second)."),
    ) -> VerifyResult:
        principal = principal_of(request)
        if full and principal is not None and not role_allows(principal.role, "admin"):
            raise PermissionDeniedError("a full walk of the log needs the admin role; without `full` the walk "
                                        "covers what is new since the last one", required_role="admin")
        return convert(ledger.verify_log(full=full, wait=WALK_WAIT_SECONDS), VerifyResult)

    @post(
        "/rebuild",
        summary="Start rebuilding every read model from position 0 (queries keep being answered meanwhile); "
        "poll the job at its `url` (also `Location`). One rebuild at a time across all servers: 409 "
        "`rebuild_in_progress` meanwhile",
        sync_to_thread=True,
        status_code=HTTP_202_ACCEPTED,
        opt=requires("admin"),
        responses=responses(CONFLICT, INVALID),  # INVALID: an Idempotency-Key reused for another request
    )
    def rebuild(
        self, runtime: NamedDependency[Runtime], context: NamedDependency[CommandContext],
        data: JSONBody[StartRebuild | None] = None,
    ) -> Response[RebuildJob]:
        job = runtime.rebuilds.start(started_by=context.actor)
        return Response(job, status_code=HTTP_202_ACCEPTED, headers={"Location": job.url})

    @get("/rebuilds/{job_id:str}", summary="A rebuild job: running, succeeded (with positions) or failed",
         opt=requires("admin"), responses=responses(NOT_FOUND))
    async def rebuild_job(self, job_id: FromPath[str], runtime: NamedDependency[Runtime]) -> RebuildJob:
        job = runtime.rebuilds.get(job_id)
        if job is None:
            raise NotFoundError(f"no rebuild job {job_id[:80]!r}", job_id=job_id[:80])
        return job
