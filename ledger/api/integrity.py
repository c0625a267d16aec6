"""``/api/ledger``: the log as a whole: verify its tamper-evident chain (reader), rebuild the read models (admin)."""

from __future__ import annotations

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.status_codes import HTTP_202_ACCEPTED

from ledger.api.auth import requires
from ledger.api.errors import CONFLICT, NOT_FOUND, responses
from ledger.api.deps import Services
from ledger.api.rebuilds import RebuildJob
from ledger.api.schemas import VerifyResult
from ledger.application import ProfileLedger
from ledger.errors import NotFoundError


class LedgerController(Controller):
    path = "/api/ledger"
    tags = ["ledger"]

    @get(
        "/verify",
        summary="Walk the tamper-evident chain; `ok` is false and `position` names the first tampered position",
        sync_to_thread=True,
        opt=requires("reader"),
    )
    def verify(self, ledger: NamedDependency[ProfileLedger]) -> VerifyResult:
        report = ledger.verify_log()
        return VerifyResult(
            ok=report.ok,
            checked=report.checked,
            head_position=report.head_position,
            head_link=report.head_link,
            problem=report.problem,  # type: ignore[arg-type]
            position=report.position,
            detail=report.detail,
        )

    @post(
        "/rebuild",
        summary="Start rebuilding every read model from position 0 (queries keep being answered meanwhile); "
        "poll the job at its `url` (also `Location`). One rebuild at a time across all servers: 409 "
        "`rebuild_in_progress` meanwhile",
        sync_to_thread=True,
        status_code=HTTP_202_ACCEPTED,
        opt=requires("admin"),
        responses=responses(CONFLICT),
    )
    def rebuild(self, services: NamedDependency[Services]) -> Response[RebuildJob]:
        job = services.rebuilds.start()
        return Response(job, status_code=HTTP_202_ACCEPTED, headers={"Location": job.url})

    @get("/rebuilds/{job_id:str}", summary="A rebuild job: running, succeeded (with positions) or failed",
         opt=requires("admin"), responses=responses(NOT_FOUND))
    async def rebuild_job(self, job_id: FromPath[str], services: NamedDependency[Services]) -> RebuildJob:
        job = services.rebuilds.get(job_id)
        if job is None:
            raise NotFoundError(f"no rebuild job {job_id[:80]!r} on this server", job_id=job_id[:80])
        return job
