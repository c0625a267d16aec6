"""``/api/ledger``: the log as a whole: verify its tamper-evident chain (reader), rebuild the read models (admin)."""

from __future__ import annotations

import threading

from litestar import Controller, post, get
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK

from ledger.api.auth import requires
from ledger.api.deps import Services
from ledger.api.schemas import RebuildResult, VerifyResult
from ledger.application import ProfileLedger

_REBUILDING = threading.Lock()


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
        summary="Rebuild every read model from position 0 (queries keep being answered meanwhile)",
        sync_to_thread=True,
        status_code=HTTP_200_OK,
        opt=requires("admin"),
    )
    def rebuild(self, services: NamedDependency[Services]) -> RebuildResult:
        from projections.runner import rebuild as rebuild_read_models

        with _REBUILDING:  # one rebuild at a time in this process
            positions = rebuild_read_models(services.database, progress=False)
        return RebuildResult(positions=dict(positions))
