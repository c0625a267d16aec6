"""Read model ``active_profile``: the single active profile and the version in effect.

Unpinned, the version in effect follows the profile's latest version, so revisions of the active profile
move it; pinned, it stays. The table's only key is the constant slot 1: two rows are impossible.
"""

from __future__ import annotations

from ledger.domainmodel import ActiveSlot, Profile
from projections.fields import recorded
from projections.ops import Delete, Insert, Op, Update
from projections.projection import ReadModelProjection
from projections.reading import Queries
from projections.rows import ActiveRow
from projections.tables import Table

ACTIVE = Table(
    "active_profile", ActiveRow, key=("slot",), internal={"slot": int, "correlation_id": str | None},
    derived=("name",), checks=("slot = 1",),
)


def on_slot_activated(event: ActiveSlot.Activated) -> list[Op]:
    values = recorded(event)
    return [Insert(ACTIVE, {
        "slot": 1,
        "profile_id": event.profile_id,
        "pinned_version": event.pinned_version,
        "version": event.version,
        "activated_at": values.pop("recorded_at"),
        **values,
    }, on_conflict="replace")]


def on_slot_deactivated(event: ActiveSlot.Deactivated) -> list[Op]:
    return [Delete(ACTIVE, {"slot": 1})]


def on_new_version(event: Profile.SpecRevised | Profile.DetailsRevised) -> list[Op]:
    where = {"slot": 1, "profile_id": event.originator_id, "pinned_version": None}
    return [Update(ACTIVE, where, {"version": event.version})]


PROJECTION = ReadModelProjection(
    name="active_profile",
    tables=(ACTIVE,),
    handlers={
        ActiveSlot.Activated: on_slot_activated,
        ActiveSlot.Deactivated: on_slot_deactivated,
        Profile.SpecRevised: on_new_version,
        Profile.DetailsRevised: on_new_version,
    },
    version=2,
)


class ActiveQueries(Queries):
    def active_profile(self) -> ActiveRow | None:
        return self._one(
            ActiveRow,
            f"SELECT {ACTIVE.select('a')}, p.name FROM active_profile a LEFT JOIN profiles p ON p.id = a.profile_id "
            "WHERE a.slot = 1",
        )
