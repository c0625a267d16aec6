"""Read model ``profiles``: the current state of every live profile, with its tags, products and usage.

Deleted profiles leave this table (their name becomes free again); versions and audit rows stay elsewhere.
What a deleted profile's row held that its events do not (its usage counts) waits in ``profile_graves``
until the profile is restored (``Profile.Restored`` carries everything else).
"""

from __future__ import annotations

from typing import Any

from ledger.domainmodel import Execution, Profile

from projections.bulk import MemoryBuild, overlay, pick
from projections.fields import created_params, detail_overlay, spec_params
from projections.projection import ReadModelProjection, Write

TABLES = {
    "profiles": (
        """CREATE TABLE IF NOT EXISTS {profiles} (
            id {uuid} PRIMARY KEY,
            name text NOT NULL,
            name_key text NOT NULL,
            name_search text NOT NULL,
            description text,
            description_search text NOT NULL,
            model_id text,
            sae_id text,
            layer integer,
            steering {json} NOT NULL,
            feature_count integer NOT NULL,
            tags {labels},
            products {labels},
            metadata {json} NOT NULL,
            version integer NOT NULL,
            is_active {bool} NOT NULL DEFAULT FALSE,
            pinned_version integer,
            execution_count integer NOT NULL DEFAULT 0,
            last_executed_at {timestamp},
            created_at {timestamp} NOT NULL,
            updated_at {timestamp} NOT NULL,
            position {bigint} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS {profiles}_by_name ON {profiles} (name_key, id)",
        "CREATE INDEX IF NOT EXISTS {profiles}_by_update ON {profiles} (updated_at, id)",
        # At most one active profile, whatever the projection is fed.
        "CREATE UNIQUE INDEX IF NOT EXISTS {profiles}_one_active ON {profiles} (is_active) WHERE is_active",
    ),
    "profile_graves": (
        """CREATE TABLE IF NOT EXISTS {profile_graves} (
            id {uuid} PRIMARY KEY,
            execution_count integer NOT NULL,
            last_executed_at {timestamp}
        )""",
    ),
}

# PostgreSQL only: array and trigram indexes for filtered, searched listings at a million profiles.
POSTGRES_INDEXES = {
    "profiles": (
        "CREATE INDEX IF NOT EXISTS {profiles}_tags ON {profiles} USING gin (tags)",
        "CREATE INDEX IF NOT EXISTS {profiles}_products ON {profiles} USING gin (products)",
    ),
}
TRIGRAM_INDEXES = {
    "profiles": (
        "CREATE INDEX IF NOT EXISTS {profiles}_name_trgm ON {profiles} USING gin (name_search gin_trgm_ops)",
        "CREATE INDEX IF NOT EXISTS {profiles}_description_trgm ON {profiles} "
        "USING gin (description_search gin_trgm_ops)",
    ),
}

_OVERLAY = ",\n".join(
    f"{column} = CASE WHEN :set_{flag} THEN :{column} ELSE {column} END"
    for column, flag in (
        ("name", "name"),
        ("name_key", "name"),
        ("name_search", "name"),
        ("description", "description"),
        ("description_search", "description"),
        ("tags", "tags"),
        ("products", "products"),
        ("metadata", "metadata"),
    )
)

STATEMENTS = {
    "insert": """INSERT INTO {profiles} (
            id, name, name_key, name_search, description, description_search, model_id, sae_id, layer, steering,
            feature_count, tags, products, metadata, version, created_at, updated_at, position)
        VALUES (:id, :name, :name_key, :name_search, :description, :description_search, :model_id, :sae_id,
            :layer, :steering, :feature_count, :tags, :products, :metadata, 1, :at, :at, :position)""",
    "revise_details": f"""UPDATE {{profiles}} SET {_OVERLAY},
            version = :version, updated_at = :at, position = :position
        WHERE id = :id""",
    "revise_spec": f"""UPDATE {{profiles}} SET {_OVERLAY},
            model_id = :model_id, sae_id = :sae_id, layer = :layer, steering = :steering,
            feature_count = :feature_count, version = :version, updated_at = :at, position = :position
        WHERE id = :id""",
    "deactivate_others": "UPDATE {profiles} SET is_active = FALSE, pinned_version = NULL "
    "WHERE is_active AND id <> :id",
    "activate": "UPDATE {profiles} SET is_active = TRUE, pinned_version = :pinned_version, updated_at = :at, "
    "position = :position WHERE id = :id",
    "deactivate": "UPDATE {profiles} SET is_active = FALSE, pinned_version = NULL, updated_at = :at, "
    "position = :position WHERE id = :id",
    "bury": """INSERT INTO {profile_graves} (id, execution_count, last_executed_at)
        SELECT id, CASE WHEN :drop_executions THEN 0 ELSE execution_count END,
            CASE WHEN :drop_executions THEN NULL ELSE last_executed_at END
        FROM {profiles} WHERE id = :id
        ON CONFLICT (id) DO UPDATE SET execution_count = excluded.execution_count,
            last_executed_at = excluded.last_executed_at""",
    "delete": "DELETE FROM {profiles} WHERE id = :id",
    "restore": """INSERT INTO {profiles} (
            id, name, name_key, name_search, description, description_search, model_id, sae_id, layer, steering,
            feature_count, tags, products, metadata, version, execution_count, last_executed_at, created_at,
            updated_at, position)
        VALUES (:id, :name, :name_key, :name_search, :description, :description_search, :model_id, :sae_id,
            :layer, :steering, :feature_count, :tags, :products, :metadata, :version,
            COALESCE((SELECT execution_count FROM {profile_graves} WHERE id = :id), 0),
            (SELECT last_executed_at FROM {profile_graves} WHERE id = :id), :created_at, :at, :position)""",
    "unbury": "DELETE FROM {profile_graves} WHERE id = :id",
    "count_execution": "UPDATE {profiles} SET execution_count = execution_count + 1, "
    "last_executed_at = {greatest}(COALESCE(last_executed_at, :at), :at) WHERE id = :id",
}


def _identity(event: Any, position: int) -> dict[str, Any]:
    return {"id": event.originator_id, "at": event.timestamp, "position": position}


def on_created(event: Profile.Created, position: int) -> list[Write]:
    return [Write("insert", {**_identity(event, position), **created_params(event)})]


def on_spec_revised(event: Profile.SpecRevised, position: int) -> list[Write]:
    params = {**_identity(event, position), **detail_overlay(event.changes), **spec_params(event)}
    return [Write("revise_spec", {**params, "version": event.version})]


def on_details_changed(event: Profile.DetailsRevised | Profile.DetailsEdited, position: int) -> list[Write]:
    params = {**_identity(event, position), **detail_overlay(event.changes), "version": event.version}
    return [Write("revise_details", params)]


def on_activated(event: Profile.Activated, position: int) -> list[Write]:
    identity = _identity(event, position)
    return [
        Write("deactivate_others", {"id": event.originator_id}),
        Write("activate", {**identity, "pinned_version": event.pinned_version}),
    ]


def on_deactivated(event: Profile.Deactivated, position: int) -> list[Write]:
    return [Write("deactivate", _identity(event, position))]


def on_deleted(event: Profile.Deleted, position: int) -> list[Write]:
    return [
        Write("bury", {"id": event.originator_id, "drop_executions": bool(event.delete_executions)}),
        Write("delete", {"id": event.originator_id}),
    ]


def on_restored(event: Profile.Restored, position: int) -> list[Write]:
    params = {**_identity(event, position), **created_params(event), "version": event.version,
              "created_at": event.created_at}
    return [Write("restore", params), Write("unbury", {"id": event.originator_id})]


def on_execution_recorded(event: Execution.Recorded, position: int) -> list[Write]:
    return [Write("count_execution", {"id": event.profile_id, "at": event.timestamp})]


# What each statement does, for rebuilds in memory (projections.bulk).
COLUMNS = (
    "id", "name", "name_key", "name_search", "description", "description_search", "model_id", "sae_id", "layer",
    "steering", "feature_count", "tags", "products", "metadata", "version", "is_active", "pinned_version",
    "execution_count", "last_executed_at", "created_at", "updated_at", "position",
)
_BY_FLAG = {
    "name": ("name", "name_key", "name_search"),
    "description": ("description", "description_search"),
    "tags": ("tags",),
    "products": ("products",),
    "metadata": ("metadata",),
}
_SPEC = ("model_id", "sae_id", "layer", "steering", "feature_count")


def _active(build: MemoryBuild) -> set[Any]:
    return build.extra.setdefault("active", set())


def fold_insert(build: MemoryBuild, p: Any) -> None:
    build.tables["profiles"].setdefault(p["id"], pick(
        p, COLUMNS, version=1, is_active=False, pinned_version=None, execution_count=0, last_executed_at=None,
        created_at=p["at"], updated_at=p["at"]))


def fold_revise_details(build: MemoryBuild, p: Any) -> None:
    row = build.tables["profiles"].get(p["id"])
    if row is not None:
        overlay(row, p, _BY_FLAG)
        row.update(version=p["version"], updated_at=p["at"], position=p["position"])


def fold_revise_spec(build: MemoryBuild, p: Any) -> None:
    row = build.tables["profiles"].get(p["id"])
    if row is not None:
        overlay(row, p, _BY_FLAG)
        row.update({column: p[column] for column in _SPEC})
        row.update(version=p["version"], updated_at=p["at"], position=p["position"])


def fold_deactivate_others(build: MemoryBuild, p: Any) -> None:
    rows, active = build.tables["profiles"], _active(build)
    for profile_id in [other for other in active if other != p["id"]]:
        active.discard(profile_id)
        if profile_id in rows:
            rows[profile_id].update(is_active=False, pinned_version=None)


def fold_activate(build: MemoryBuild, p: Any) -> None:
    row = build.tables["profiles"].get(p["id"])
    if row is not None:
        row.update(is_active=True, pinned_version=p["pinned_version"], updated_at=p["at"], position=p["position"])
        _active(build).add(p["id"])


def fold_deactivate(build: MemoryBuild, p: Any) -> None:
    row = build.tables["profiles"].get(p["id"])
    if row is not None:
        row.update(is_active=False, pinned_version=None, updated_at=p["at"], position=p["position"])
        _active(build).discard(p["id"])


def fold_delete(build: MemoryBuild, p: Any) -> None:
    build.tables["profiles"].pop(p["id"], None)
    _active(build).discard(p["id"])


def fold_bury(build: MemoryBuild, p: Any) -> None:
    row = build.tables["profiles"].get(p["id"])
    if row is not None:
        dropped = p["drop_executions"]
        build.tables["profile_graves"][p["id"]] = {
            "id": p["id"],
            "execution_count": 0 if dropped else row["execution_count"],
            "last_executed_at": None if dropped else row["last_executed_at"],
        }


def fold_restore(build: MemoryBuild, p: Any) -> None:
    grave = build.tables["profile_graves"].get(p["id"]) or {"execution_count": 0, "last_executed_at": None}
    build.tables["profiles"].setdefault(p["id"], pick(
        p, COLUMNS, is_active=False, pinned_version=None, execution_count=grave["execution_count"],
        last_executed_at=grave["last_executed_at"], updated_at=p["at"]))


def fold_unbury(build: MemoryBuild, p: Any) -> None:
    build.tables["profile_graves"].pop(p["id"], None)


def fold_count_execution(build: MemoryBuild, p: Any) -> None:
    row = build.tables["profiles"].get(p["id"])
    if row is not None:
        row["execution_count"] += 1
        last = row["last_executed_at"]
        row["last_executed_at"] = p["at"] if last is None or p["at"] > last else last


FOLDS = {
    "insert": fold_insert,
    "revise_details": fold_revise_details,
    "revise_spec": fold_revise_spec,
    "deactivate_others": fold_deactivate_others,
    "activate": fold_activate,
    "deactivate": fold_deactivate,
    "delete": fold_delete,
    "bury": fold_bury,
    "restore": fold_restore,
    "unbury": fold_unbury,
    "count_execution": fold_count_execution,
}

PROJECTION = ReadModelProjection(
    name="profiles",
    tables=TABLES,
    statements=STATEMENTS,
    handlers={
        Profile.Created: on_created,
        Profile.SpecRevised: on_spec_revised,
        Profile.DetailsRevised: on_details_changed,
        Profile.DetailsEdited: on_details_changed,
        Profile.Activated: on_activated,
        Profile.Deactivated: on_deactivated,
        Profile.Deleted: on_deleted,
        Profile.Restored: on_restored,
        Execution.Recorded: on_execution_recorded,
    },
    postgres_indexes=POSTGRES_INDEXES,
    trigram_indexes=TRIGRAM_INDEXES,
    folds=FOLDS,
)
