"""``/api/profiles/{id}/versions``: the versions of one profile, from the read model."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import PathParameter

from ledger.api.deps import LOOKUP, Cursor, Limit
from ledger.api.references import ProfileRef, profile_not_found
from ledger.api.schemas import VersionList, VersionRead
from ledger.application import ProfileLedger
from ledger.errors import ProfileVersionNotFoundError
from ledger.states import convert
from ledger.values import INT64_MAX


class ProfileVersionController(Controller):
    path = "/api/profiles/{profile_id:str}/versions"
    tags = ["versions"]

    @get("/", summary="Every version of a profile, oldest first", **LOOKUP)
    def list_versions(
        self,
        profile_id: ProfileRef,
        reads: NamedDependency[Any],
        ledger: NamedDependency[ProfileLedger],
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> VersionList:
        pid = ledger.resolve_profile(profile_id)
        page = reads.list_versions(pid, limit=limit, cursor=cursor)
        if not page.items and cursor is None:
            raise profile_not_found(pid)
        return convert(page, VersionList, versions=page.items)

    @get("/{version:int}", summary="One version of a profile", **LOOKUP)
    def get_version(
        self,
        profile_id: ProfileRef,
        version: Annotated[int, PathParameter(ge=1, le=INT64_MAX)],
        reads: NamedDependency[Any],
        ledger: NamedDependency[ProfileLedger],
    ) -> VersionRead:
        pid = ledger.resolve_profile(profile_id)
        row = reads.get_version(pid, version)
        if row is None:
            raise ProfileVersionNotFoundError(
                f"profile {pid} has no version {version}", profile_id=str(pid), version=version
            )
        return convert(row, VersionRead)
