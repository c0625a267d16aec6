"""The profile exchange format: seed 000's ``millm_profile`` document, and the flat document miLLM exports.

Pure functions. Parsing validates everything and refuses (never drops) a bad entry, naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ledger import values
from ledger.domainmodel import PROFILE_FIELDS, canonical_value
from ledger.errors import ImportFormatError, ValidationError

FORMAT_VERSION = "1.0"
FORMAT_TYPE = "millm_profile"
EXPORTED_FROM = "profile-ledger"

DOCUMENT_KEYS = frozenset({"version", "type", "profile", "exported_at", "exported_from"})
EXPORTED_PROFILE_KEYS = frozenset({*PROFILE_FIELDS, "model", "sae", "profile_version"})
FLAT_KEYS = frozenset({
    *PROFILE_FIELDS,
    # what a flat profile (miLLM's ProfileResponse, this API's own answer, `ledger show --json`) also says about
    # itself: read, not imported (the new profile gets its own id, times and version)
    "id", "version", "feature_count", "is_active", "created_at", "updated_at", "execution_count",
    "last_executed_at", "pinned", "latest_version", "deleted", "revision",
    "position", "changed", "pinned_version", "warnings",  # (the answer to a create, an update, an activation)
})


def export_document(profile: Any, version: int) -> dict[str, Any]:
    """A ``millm_profile`` document for one profile version (anything holding the profile's fields: a state, a
    read-model row)."""
    fields = {name: getattr(profile, name) for name in PROFILE_FIELDS}
    steering = values.steering_to_json(profile.steering)
    fields.update(model=fields.pop("model_id"), sae=fields.pop("sae_id"), steering=steering)
    return {
        "version": FORMAT_VERSION,
        "type": FORMAT_TYPE,
        "profile": {**fields, "profile_version": version},
        "exported_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "exported_from": EXPORTED_FROM,
    }


def parse_document(document: Any) -> dict[str, Any]:
    """Profile fields (canonical, validated) from an exchange document in either accepted shape."""
    if not isinstance(document, Mapping):
        raise ImportFormatError("an import document must be a JSON object")
    if "type" in document and document["type"] != FORMAT_TYPE:
        raise ImportFormatError(
            f"unsupported document type {document['type']!r}; expected {FORMAT_TYPE!r}", field="type"
        )
    if document.get("type") == FORMAT_TYPE:
        version = document.get("version", FORMAT_VERSION)
        if str(version).split(".")[0] != "1":
            raise ImportFormatError(f"unsupported format version {version!r}; expected 1.x", field="version")
        body = document.get("profile")
        if body is None:
            raise ImportFormatError("the document has no 'profile' object", field="profile")
        if not isinstance(body, Mapping):
            raise ImportFormatError("'profile' must be a JSON object", field="profile")
        _refuse_unknown(document, DOCUMENT_KEYS, "")
        _refuse_unknown(body, EXPORTED_PROFILE_KEYS, "profile.")
        _refuse_mistyped(document, {"version": str, "exported_at": str, "exported_from": str}, "")
        _refuse_mistyped(body, {"profile_version": int}, "profile.")
        raw = {name: body.get(name) for name in PROFILE_FIELDS}
        raw.update(model_id=_one_of(body, "model", "model_id"), sae_id=_one_of(body, "sae", "sae_id"))
        prefix = "profile."
    elif "name" in document:
        # The flat document miLLM itself exports, or this API's answer: its ``version`` is the profile's.
        _refuse_unknown(document, FLAT_KEYS | DOCUMENT_KEYS - {"profile"}, "")
        _refuse_mistyped(document, {"exported_at": str, "exported_from": str}, "")  # (its version: an int or "1.0")
        raw = {name: document.get(name) for name in PROFILE_FIELDS}
        prefix = ""
    else:
        raise ImportFormatError(
            f"the document has no 'profile' object (expected type {FORMAT_TYPE!r} with a 'profile', "
            "or a flat profile with a 'name')",
            field="profile",
        )
    if raw["name"] is None:
        raise ImportFormatError("the profile has no name", field=f"{prefix}name")
    try:
        return {name: canonical_value(name, raw[name]) for name in PROFILE_FIELDS}
    except ValidationError as error:
        raise ImportFormatError(error.message, field=f"{prefix}{error.field}" if error.field else None) from None


def provenance(document: Mapping[str, Any]) -> dict[str, Any]:
    """Where a (parsed) document says it came from: the system that exported it, when (in UTC), and the profile
    version it holds (each None where the document does not say). An import records it with the profile it
    creates, so each must be what it claims to be: a name (as a model's id is), a time."""
    body = document.get("profile") if document.get("type") == FORMAT_TYPE else document
    version = body.get("profile_version", body.get("version") if body is document else None)
    exported_at = document.get("exported_at")
    try:
        if version is not None and not isinstance(version, str):  # (a flat document's may be its format's, "1.0")
            values.integer(version, "version" if body is document else "profile.profile_version", 1, values.INT64_MAX)
        exported_from = values.identifier(document.get("exported_from"), "exported_from")
        if exported_at is not None:
            exported_at = values.iso_time(exported_at).isoformat().replace("+00:00", "Z")
    except ValidationError as error:
        raise ImportFormatError(error.message, field=error.field) from None
    except ValueError as error:
        raise ImportFormatError(f"exported_at: {error}", field="exported_at") from None
    return {"exported_from": exported_from, "exported_at": exported_at,
            "profile_version": version if type(version) is int else None}


def _one_of(body: Mapping[str, Any], name: str, alias: str) -> Any:
    """A field the document may give under either name; given under both, the values must agree."""
    if name in body and alias in body and body[name] != body[alias]:
        raise ImportFormatError(f"profile.{name} and profile.{alias} name the same field and disagree "
                                f"({body[name]!r} and {body[alias]!r})", field=f"profile.{alias}")
    return body.get(name, body.get(alias))


def _refuse_mistyped(document: Mapping[str, Any], kinds: Mapping[str, type], prefix: str) -> None:
    """The fields read for information only (not imported) still have their types: a wrong one is refused, naming
    it, rather than dropped unseen."""
    for name, kind in kinds.items():
        value = document.get(name)
        if value is not None and (type(value) is not kind or kind is int and value < 1):
            wanted = "a positive integer" if kind is int else "a string"
            raise ImportFormatError(f"{prefix}{name} must be {wanted} (got {value!r})", field=f"{prefix}{name}")


def _refuse_unknown(document: Mapping[str, Any], known: frozenset[str], prefix: str) -> None:
    """A field this format does not have is refused, naming it (a misspelt ``steerring`` would else be dropped)."""
    unknown = sorted(str(key) for key in document if key not in known)
    if unknown:
        raise ImportFormatError(
            f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(repr(prefix + k) for k in unknown[:5])} "
            f"in the import document; known: {', '.join(sorted(known))}",
            field=f"{prefix}{unknown[0]}",
        )


def renamed(name: str, attempt: int) -> str:
    """The ``attempt``-th alternative for a clashing imported name, within the length limit."""
    suffix = " (imported)" if attempt == 1 else f" (imported {attempt})"
    return name[: values.NAME_MAX - len(suffix)].rstrip() + suffix
