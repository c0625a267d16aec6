"""Read model ``active_profile``: the single active profile and the version in effect.

Unpinned, the version in effect follows the profile's latest version, so revisions of the active profile
move it; pinned, it stays. The table's only key is the constant slot 1: two rows are impossible.
"""

from __future__ import annotations

from ledger.domainmodel import ActiveSlot, Profile

from typing import Any

from projections.bulk import MemoryBuild
from projections.fields import audit_params
from projections.projection import ReadModelProjection, Write

TABLES = {
    "active_profile": (
        """CREATE TABLE IF NOT EXISTS {active_profile} (
            slot integer PRIMARY KEY CHECK (slot = 1),
            profile_id {uuid} NOT NULL,
            pinned_version integer,
            version integer NOT NULL,
            activated_at {timestamp} NOT NULL,
            actor text NOT NULL,
            reason text,
            correlation_id text,
            position {bigint} NOT NULL
        )""",
    ),
}

STATEMENTS = {
    "activate": """INSERT INTO {active_profile}
            (slot, profile_id, pinned_version, version, activated_at, actor, reason, correlation_id, position)
        VALUES (1, :profile_id, :pinned_version, :version, :recorded_at, :actor, :reason, :correlation_id,
            :position)
        ON CONFLICT (slot) DO UPDATE SET profile_id = excluded.profile_id,
            pinned_version = excluded.pinned_version, version = excluded.version,
            activated_at = excluded.activated_at, actor = excluded.actor, reason = excluded.reason,
            correlation_id = excluded.correlation_id, position = excluded.position""",
    "deactivate": "DELETE FROM {active_profile} WHERE slot = 1",
    "follow_latest": "UPDATE {active_profile} SET version = :version "
    "WHERE profile_id = :profile_id AND pinned_version IS NULL",
}


def on_slot_activated(event: ActiveSlot.Activated, position: int) -> list[Write]:
    params = {
        "profile_id": event.profile_id,
        "pinned_version": event.pinned_version,
        "version": event.version,
        "position": position,
        **audit_params(event),
    }
    return [Write("activate", params)]


def on_slot_deactivated(event: ActiveSlot.Deactivated, position: int) -> list[Write]:
    return [Write("deactivate", {})]


def on_new_version(event: Profile.SpecRevised | Profile.DetailsRevised, position: int) -> list[Write]:
    return [Write("follow_latest", {"profile_id": event.originator_id, "version": event.version})]


# What each statement does, for rebuilds in memory (projections.bulk).
def fold_activate(build: MemoryBuild, p: Any) -> None:
    build.tables["active_profile"][1] = {
        "slot": 1, "profile_id": p["profile_id"], "pinned_version": p["pinned_version"], "version": p["version"],
        "activated_at": p["recorded_at"], "actor": p["actor"], "reason": p["reason"],
        "correlation_id": p["correlation_id"], "position": p["position"],
    }


def fold_deactivate(build: MemoryBuild, p: Any) -> None:
    build.tables["active_profile"].pop(1, None)


def fold_follow_latest(build: MemoryBuild, p: Any) -> None:
    row = build.tables["active_profile"].get(1)
    if row is not None and row["profile_id"] == p["profile_id"] and row["pinned_version"] is None:
        row["version"] = p["version"]


FOLDS = {"activate": fold_activate, "deactivate": fold_deactivate, "follow_latest": fold_follow_latest}

PROJECTION = ReadModelProjection(
    name="active_profile",
    tables=TABLES,
    statements=STATEMENTS,
    handlers={
        ActiveSlot.Activated: on_slot_activated,
        ActiveSlot.Deactivated: on_slot_deactivated,
        Profile.SpecRevised: on_new_version,
        Profile.DetailsRevised: on_new_version,
    },
    folds=FOLDS,
)
