"""Read model ``profile_versions``: one row per (profile, user-facing version), kept after deletion.

A new version is a copy of the previous version's row with what the event changed; ``DetailsEdited`` rewrites
the descriptive fields of the version it belongs to.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from ledger.domainmodel import Profile
from projections import cursors
from projections.fields import DETAIL_BYTES, PROFILE_SIZES, content, details, recorded, spec
from projections.ops import Copy, Insert, Op, Update
from projections.projection import ReadModelProjection, event_type_name
from projections.reading import (
    PAGE_BOUNDS, Queries, as_uuid, bounded_page, checked_limit, page_rows,
)
from projections.rows import Page, VersionEntry, VersionRow
from projections.tables import Table

VERSIONS = Table("profile_versions", VersionRow, key=("profile_id", "version"), internal=DETAIL_BYTES)


def _recorded(event: Any) -> dict[str, Any]:
    """Who made a version and how (a revert and an import say what from)."""
    return {"event_type": event_type_name(event), **recorded(event), **_edit(None),
            "reverted_to": getattr(event, "reverted_to", None), "imported": getattr(event, "imported", None)}


def _edit(event: Profile.DetailsEdited | None) -> dict[str, Any]:
    """Who last edited a version without making a new one (its creator stays in ``actor``)."""
    return {"edited_by": event and event.actor, "edit_reason": event and event.reason,
            "edited_at": event and event.timestamp}


def on_created(event: Profile.Created) -> list[Op]:
    return [Insert(VERSIONS, {"profile_id": event.originator_id, "version": 1, **content(event),
                              **_recorded(event)})]


def on_revised(event: Profile.SpecRevised | Profile.DetailsRevised) -> list[Op]:
    values = details(event.changes)
    if isinstance(event, Profile.SpecRevised):
        values.update(spec(event))
    source = {"profile_id": event.originator_id, "version": event.version - 1}
    return [Copy(VERSIONS, source, {"version": event.version, **values, **_recorded(event)})]


def on_edited(event: Profile.DetailsEdited) -> list[Op]:
    return [Update(VERSIONS, {"profile_id": event.originator_id, "version": event.version},
                   {**details(event.changes), **_edit(event)})]


PROJECTION = ReadModelProjection(
    name="profile_versions",
    tables=(VERSIONS,),
    handlers={
        Profile.Created: on_created,
        Profile.SpecRevised: on_revised,
        Profile.DetailsRevised: on_revised,
        Profile.DetailsEdited: on_edited,
    },
    version=5,
)


class VersionQueries(Queries):
    def list_versions(self, profile_id: UUID | str, limit: int = 50, cursor: str | None = None) -> Page[VersionRow]:
        """A profile's versions, oldest first (deleted profiles keep theirs)."""
        limit = checked_limit(limit)
        identity = as_uuid(profile_id)
        if identity is None:
            return Page(items=(), next_cursor=None)
        listing = f"versions:{identity}"
        params: dict[str, Any] = {"id": identity, "limit": limit + 1, "after": 0}
        if cursor is not None:
            (params["after"],) = cursors.decode(cursor, listing, (int,))
        page = bounded_page(f"SELECT {VERSIONS.select()}, {', '.join(DETAIL_BYTES)} FROM profile_versions "
                            "WHERE profile_id = :id AND version > :after ORDER BY version LIMIT :limit", "version",
                            PROFILE_SIZES)
        found, more = page_rows(self._all(f"SELECT * FROM ({page}) p WHERE fits ORDER BY version",
                                          {**params, **PAGE_BOUNDS}), limit)
        rows = self._rows(VersionRow, found)
        next_cursor = cursors.encode(listing, [rows[-1].version]) if more else None
        return Page(items=tuple(rows), next_cursor=next_cursor)

    def version_entries(self, profile_id: UUID | str, newest: int, count: int) -> list[VersionEntry]:
        """A profile's history from version ``newest`` down, newest first: at most ``count`` entries (their
        content is never read)."""
        identity = as_uuid(profile_id)
        if identity is None:
            return []
        return self._rows(VersionEntry, self._all(
            f"SELECT {', '.join(VersionEntry.__struct_fields__)} FROM profile_versions WHERE profile_id = :id "
            "AND version <= :newest ORDER BY version DESC LIMIT :count", {"id": identity, "newest": newest, "count": count}))

    def get_version(self, profile_id: UUID | str, version: int) -> VersionRow | None:
        identity = as_uuid(profile_id)
        if identity is None:
            return None
        return self._one(
            VersionRow,
            f"SELECT {VERSIONS.select()} FROM profile_versions WHERE profile_id = :id AND version = :version",
            {"id": identity, "version": version},
        )
