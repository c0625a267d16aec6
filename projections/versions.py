"""Read model ``profile_versions``: one row per (profile, user-facing version), kept after deletion.

A new version copies the previous version's row and overlays what the event changed; ``DetailsEdited``
rewrites the descriptive fields of the version it belongs to.
"""

from __future__ import annotations

from typing import Any

from ledger.domainmodel import Profile

from projections.bulk import MemoryBuild, overlay, pick
from projections.fields import audit_params, created_params, detail_overlay, spec_params
from projections.projection import ReadModelProjection, Write, event_type_name

TABLES = {
    "profile_versions": (
        """CREATE TABLE IF NOT EXISTS {profile_versions} (
            profile_id {uuid} NOT NULL,
            version integer NOT NULL,
            name text NOT NULL,
            description text,
            model_id text,
            sae_id text,
            layer integer,
            steering {json} NOT NULL,
            feature_count integer NOT NULL,
            tags {labels},
            products {labels},
            metadata {json} NOT NULL,
            event_type text NOT NULL,
            actor text NOT NULL,
            reason text,
            correlation_id text,
            recorded_at {timestamp} NOT NULL,
            position {bigint} NOT NULL,
            PRIMARY KEY (profile_id, version)
        )""",
    ),
}

_DETAIL_OVERLAY = ", ".join(
    f"CASE WHEN :set_{column} THEN :{column} ELSE {column} END"
    for column in ("name", "description", "tags", "products", "metadata")
)
_SPEC_OVERLAY = ", ".join(
    f"CASE WHEN :set_spec THEN :{column} ELSE {column} END"
    for column in ("model_id", "sae_id", "layer", "steering", "feature_count")
)
_COLUMNS = (
    "profile_id, version, name, description, tags, products, metadata, model_id, sae_id, layer, steering, "
    "feature_count, event_type, actor, reason, correlation_id, recorded_at, position"
)

STATEMENTS = {
    "insert": f"""INSERT INTO {{profile_versions}} ({_COLUMNS})
        VALUES (:profile_id, 1, :name, :description, :tags, :products, :metadata, :model_id, :sae_id, :layer,
            :steering, :feature_count, :event_type, :actor, :reason, :correlation_id, :recorded_at, :position)""",
    "insert_revision": f"""INSERT INTO {{profile_versions}} ({_COLUMNS})
        SELECT profile_id, :version, {_DETAIL_OVERLAY}, {_SPEC_OVERLAY},
            :event_type, :actor, :reason, :correlation_id, :recorded_at, :position
        FROM {{profile_versions}} WHERE profile_id = :profile_id AND version = :previous_version""",
    "edit": """UPDATE {profile_versions} SET
            name = CASE WHEN :set_name THEN :name ELSE name END,
            description = CASE WHEN :set_description THEN :description ELSE description END,
            tags = CASE WHEN :set_tags THEN :tags ELSE tags END,
            products = CASE WHEN :set_products THEN :products ELSE products END,
            metadata = CASE WHEN :set_metadata THEN :metadata ELSE metadata END
        WHERE profile_id = :profile_id AND version = :version""",
}

_NO_SPEC = {"set_spec": False, "model_id": None, "sae_id": None, "layer": None, "steering": None,
            "feature_count": None}


def _recorded(event: Any, position: int) -> dict[str, Any]:
    return {
        "profile_id": event.originator_id,
        "event_type": event_type_name(event),
        "position": position,
        **audit_params(event),
    }


def on_created(event: Profile.Created, position: int) -> list[Write]:
    return [Write("insert", {**_recorded(event, position), **created_params(event)})]


def on_spec_revised(event: Profile.SpecRevised, position: int) -> list[Write]:
    params = {
        **_recorded(event, position),
        **detail_overlay(event.changes),
        **spec_params(event),
        "set_spec": True,
        "version": event.version,
        "previous_version": event.version - 1,
    }
    return [Write("insert_revision", params)]


def on_details_revised(event: Profile.DetailsRevised, position: int) -> list[Write]:
    params = {
        **_recorded(event, position),
        **detail_overlay(event.changes),
        **_NO_SPEC,
        "version": event.version,
        "previous_version": event.version - 1,
    }
    return [Write("insert_revision", params)]


def on_details_edited(event: Profile.DetailsEdited, position: int) -> list[Write]:
    params = {"profile_id": event.originator_id, "version": event.version, **detail_overlay(event.changes)}
    return [Write("edit", params)]


# What each statement does, for rebuilds in memory (projections.bulk).
COLUMNS = tuple(column.strip() for column in _COLUMNS.split(","))
_DETAILS = {field: (field,) for field in ("name", "description", "tags", "products", "metadata")}
_SPEC = {"spec": ("model_id", "sae_id", "layer", "steering", "feature_count")}
_RECORDED = ("event_type", "actor", "reason", "correlation_id", "recorded_at", "position")


def fold_insert(build: MemoryBuild, p: Any) -> None:
    if p["profile_id"] not in build.extra.get("latest", {}):  # else version 1 exists already, sealed
        build.tables["profile_versions"].setdefault((p["profile_id"], 1), pick(p, COLUMNS, version=1))


def fold_insert_revision(build: MemoryBuild, p: Any) -> None:
    """Only a profile's latest version stays in memory: the one it supersedes is sealed (see fold_edit)."""
    rows = build.tables["profile_versions"]
    previous_key = (p["profile_id"], p["previous_version"])
    previous = rows.get(previous_key)
    key = (p["profile_id"], p["version"])
    if previous is None or key in rows:
        return
    row = dict(previous, version=p["version"])
    overlay(row, p, _DETAILS)
    overlay(row, p, _SPEC)
    row.update({column: p[column] for column in _RECORDED})
    rows[key] = row
    build.seal("profile_versions", rows.pop(previous_key))
    build.extra.setdefault("latest", {})[p["profile_id"]] = p["version"]


def fold_edit(build: MemoryBuild, p: Any) -> None:
    key = (p["profile_id"], p["version"])
    row = build.tables["profile_versions"].get(key)
    if row is not None:
        overlay(row, p, _DETAILS)
    elif p["version"] < build.extra.get("latest", {}).get(p["profile_id"], 0):
        build.late.append(("edit", p))  # an older version, already sealed: edited on the table at the end


FOLDS = {"insert": fold_insert, "insert_revision": fold_insert_revision, "edit": fold_edit}

PROJECTION = ReadModelProjection(
    name="profile_versions",
    tables=TABLES,
    statements=STATEMENTS,
    handlers={
        Profile.Created: on_created,
        Profile.SpecRevised: on_spec_revised,
        Profile.DetailsRevised: on_details_revised,
        Profile.DetailsEdited: on_details_edited,
    },
    folds=FOLDS,
)
