"""Profile commands: create, update, show, history, list, activate, deactivate, delete, export, import.

Every command that takes a profile takes its name or its id (``NAME_OR_ID``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any, Optional, TypeVar

import msgspec
import typer

from ledger import strict_json, values
from ledger.application import Outcome
from ledger.states import ProfileFields, ProfileState, showing_version
from ledger.cli.context import (
    ACTOR, CURSOR, EXPECTED_REVISION, EXPECTED_VERSION, JSON, PROFILE, REASON, acting, as_text, emit, emit_json,
    emit_json_list, json_as_written, json_error, limit_option, page_lines, parse_json, plain, profile_ref, say, shown,
    state, write_output,
)
from ledger.errors import ImportFormatError, ValidationError
from projections.profiles import SEARCH_HELP


def parse_steering(steering: str | None, features: list[str]) -> dict[str, Any]:
    """``--steering`` (a JSON object) and ``IDX=STRENGTH`` pairs into one steering mapping (validated later by
    the domain); an index given twice is refused, never dropped."""
    given = parse_json(steering, "steering")
    if given is not None and not isinstance(given, dict):
        raise ValidationError('--steering must be a JSON object such as {"12": 0.8}', field="steering")
    merged: dict[str, Any] = dict(given or {})
    for item in features:  # INDEX=STRENGTH, as features_as_written checked
        index, _, strength = item.partition("=")
        if index.strip() in merged:
            raise ValidationError(f"feature {index.strip()} is given twice", field="steering")
        merged[index.strip()] = float(strength)
    return merged


def spec_and_details(
    name: str | None,
    description: str | None,
    model_id: str | None,
    sae_id: str | None,
    layer: int | None,
    steering: str | None,
    features: list[str],
    tags: list[str] | None,
    products: list[str] | None,
    metadata: str | None,
) -> dict[str, Any]:
    """The fields given on the command line (absent options are not included)."""
    fields: dict[str, Any] = {
        "name": name, "description": description, "model_id": model_id, "sae_id": sae_id, "layer": layer,
        "tags": tags or None, "products": products or None, "metadata": parse_json(metadata, "metadata"),
    }
    if steering is not None or features:
        fields["steering"] = parse_steering(steering, features)
    return {key: value for key, value in fields.items() if value is not None}


def describe(profile: ProfileState, latest: int | None = None) -> str:
    steering = ", ".join(f"{i}={shown(s)}" for i, s in list(profile.steering.items())[:12])
    if len(profile.steering) > 12:
        steering += ", …"
    lines = [
        f"{profile.name}  (id {profile.id})  version {profile.version}{active_mark(profile)}"
        + (f"; latest is version {latest}" if latest is not None else ""),
        f"  description: {plain(profile.description or '-')}",
        f"  model: {plain(profile.model_id or '-')}   sae: {plain(profile.sae_id or '-')}   layer: "
        f"{'-' if profile.layer is None else profile.layer}",
        f"  steering ({len(profile.steering)} features): {steering or '-'}",
        f"  tags: {plain(', '.join(profile.tags) or '-')}   products: {plain(', '.join(profile.products) or '-')}",
        f"  created: {profile.created_at.isoformat()}   updated: {profile.updated_at.isoformat()}",
    ]
    if profile.metadata:
        lines.append(f"  metadata: {shown(profile.metadata)}")
    return "\n".join(lines)


PAST = {"import": "imported", "revert": "reverted"}


def in_force_line(latest: int, pinned_version: int | None) -> str:
    """Which version of the active profile is in force: the pinned one, or the latest."""
    if pinned_version is None:
        return f"  in force: version {latest} (follows the latest)"
    return f"  in force: version {pinned_version} (pinned; latest is {latest})"


def report(outcome: Outcome, as_json: bool, verb: str) -> None:
    """A command's answer: the profile it leaves, as every read shows it (the version in force, see
    :func:`as_in_force`)."""
    profile, latest = in_force_state(outcome.profile) if outcome.profile is not None else (None, None)
    if as_json:
        emit_json({"changed": outcome.changed, "position": outcome.position,
                   "profile": None if profile is None else in_force_document(profile, latest),
                   "warnings": list(outcome.warnings)})
        return
    if profile is None:
        say(f"nothing to {verb}")
    elif not outcome.changed:
        say(f"unchanged: {profile.name} is already as requested (version {profile.version})")
    else:
        say(f"{PAST.get(verb, verb + 'd')} at position {outcome.position}")
        say(describe(profile, latest))


def version_line(record: Any, details: str) -> str:
    """A version of a profile: who made it, when, how (a revert or an import says what from) and why, then
    (indented below) ``details``."""
    reason = f"  ({plain(record.reason)})" if record.reason else ""
    return (f"v{record.version}  {record.recorded_at.isoformat()}  {record.actor}  {record.event_type}"
            f"{origin_text(record)}{reason}\n    {details}")


def origin_text(record: Any) -> str:
    if record.reverted_to is not None:
        return f"  reverted to v{record.reverted_to}"
    if record.imported is None:
        return ""
    source = record.imported
    said = [f"from {plain(source['exported_from'])}" if source.get("exported_from") else "",
            f"exported {plain(source['exported_at'])}" if source.get("exported_at") else "",
            f"as v{source['profile_version']}" if source.get("profile_version") else ""]
    return "  imported" + "".join(f" {part}" for part in said if part)


def history_line(record: Any) -> str:
    """A version in ``ledger history``: :func:`version_line` with what its own event changed from the version before
    (the first: its steering and name), then each edit that kept it, with what that edit changed."""
    edits = "".join(f"\n    edited {edit.recorded_at.isoformat()}  {edit.actor}  {changes_text(edit.changes)}"
                    + (f"  ({plain(edit.reason)})" if edit.reason else "") for edit in record.edits)
    if record.changes is None:
        made = record.as_made()
        return version_line(record, f"steering={shown(made.steering)} name={shown(made.name)}") + edits
    return version_line(record, changes_text(record.changes.changes, record.changes.steering)) + edits


def changes_text(changes: Any, steering: Any = None) -> str:
    """A diff on one line: each field before → after, then the features added, removed, changed."""
    parts = [f"{change.field}: {shown(change.before, 60)} → {shown(change.after, 60)}" for change in changes]
    if steering is not None:
        parts += [f"+{index}={shown(strength)}" for index, strength in steering.added.items()]
        parts += [f"-{index}" for index in steering.removed]
        parts += [f"{index}: {shown(change.before)} → {shown(change.after)}"
                  for index, change in steering.changed.items()]
    return "; ".join(parts) or "no change in content"


def active_mark(profile: Any) -> str:
    """After a profile's version, as ``show`` and ``list`` print it: whether it is active, and whether that version
    is in force because its activation pinned it."""
    if not profile.is_active:
        return ""
    return f"  ACTIVE (version {profile.pinned_version} pinned, in force)" if profile.pinned_version else "  ACTIVE"


S = TypeVar("S", bound=ProfileFields)


def as_in_force(profile: S, pinned: Callable[[int], Any]) -> tuple[S, int | None]:
    """A profile (a state or a read-model row) as every query shows it, the API's included: the active profile pinned
    to an earlier version shows that version (``pinned(version)`` reads it), and its latest version is returned too
    (None for any other profile)."""
    pinned_version = getattr(profile, "pinned_version", None)
    if not profile.is_active or pinned_version in (None, profile.version):  # type: ignore[attr-defined]
        return profile, None
    return showing_version(profile, pinned(pinned_version)), profile.version  # type: ignore[attr-defined]


def in_force_state(profile: S) -> tuple[S, int | None]:
    """A profile state as :func:`as_in_force` shows it, its pinned version replayed from its stream."""
    return as_in_force(profile, lambda pinned: state.ledger.get_profile(profile.id, version=pinned))


def in_force_document(profile: Any, latest: int | None, usage: Any = None) -> Any:
    """The ``--json`` document of a profile as :func:`as_in_force` shows it: with ``pinned`` and ``latest_version``
    when it shows a pinned version before its latest, as the API's body says (and ``usage``'s fields, given)."""
    if latest is None and usage is None:
        return profile
    pinned = {} if latest is None else {"pinned": True, "latest_version": latest}
    return {**msgspec.to_builtins(profile), **msgspec.to_builtins(usage or {}), **pinned}


def list_line(row: Any, latest: int | None = None) -> str:
    """A live profile in ``ledger list``: its version in force, whether active, its name, tags and executions."""
    behind = f"; latest is version {latest}" if latest is not None else ""
    return (f"{row.id}  v{row.version}{active_mark(row)}{behind}  {row.name}"
            f"  [{plain(', '.join(row.tags))}]  executions={row.execution_count}")


LIST_SORTS = {"name": "name", "updated": "updated_at"}  # --sort: the read model's order
ListSort = Enum("ListSort", {sort: sort for sort in LIST_SORTS}, type=str)
NAME = typer.Option(None, "--name")
DESCRIPTION = typer.Option(None, "--description")
MODEL = typer.Option(None, "--model-id")
SAE = typer.Option(None, "--sae-id")
LAYER = typer.Option(None, "--layer")
STEERING = typer.Option(None, "--steering", help='Steering as JSON, e.g. \'{"12": 0.8}\'.', callback=json_as_written)
def features_as_written(value: list[str]) -> list[str]:
    """Each ``--feature`` is INDEX=STRENGTH with a number for the strength (else a usage error: exit 2)."""
    for item in value:
        _, sep, strength = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r}: expected INDEX=STRENGTH")
        try:
            float(strength)
        except ValueError:
            raise typer.BadParameter(f"{item!r}: the strength must be a number") from None
    return value


FEATURE = typer.Option([], "--feature", "-f", callback=features_as_written,
                       help="INDEX=STRENGTH; repeatable, joined to --steering's features (one in both is refused). On "
                       "update: together, the whole new steering.")
TAG = typer.Option(None, "--tag", "-t", help="Repeatable. On update: the whole new set of tags.")
PRODUCT = typer.Option(None, "--product", "-p", help="Repeatable. On update: the whole new set of products.")
METADATA = typer.Option(None, "--metadata", help="A JSON object.", callback=json_as_written)


def register(app: typer.Typer) -> None:
    @app.command()
    def create(
        name: str = typer.Argument(..., metavar="NAME", help="Profile name (unique among live profiles)."),
        description: Optional[str] = DESCRIPTION,
        model_id: Optional[str] = MODEL,
        sae_id: Optional[str] = SAE,
        layer: Optional[int] = LAYER,
        steering: Optional[str] = STEERING,
        feature: list[str] = FEATURE,
        tag: Optional[list[str]] = TAG,
        product: Optional[list[str]] = PRODUCT,
        metadata: Optional[str] = METADATA,
        actor: str = ACTOR,
        reason: Optional[str] = REASON,
        as_json: bool = JSON,
    ) -> None:
        """Create a profile. Without steering, the active profile's spec is copied."""
        fields = spec_and_details(name, description, model_id, sae_id, layer, steering, feature, tag, product, metadata)
        with acting(actor, reason):
            report(state.ledger.create_profile(fields), as_json, "create")

    @app.command()
    def update(
        profile_id: str = PROFILE,
        name: Optional[str] = NAME,
        description: Optional[str] = DESCRIPTION,
        model_id: Optional[str] = MODEL,
        sae_id: Optional[str] = SAE,
        layer: Optional[int] = LAYER,
        steering: Optional[str] = STEERING,
        feature: list[str] = FEATURE,
        tag: Optional[list[str]] = TAG,
        product: Optional[list[str]] = PRODUCT,
        metadata: Optional[str] = METADATA,
        bump_version: bool = typer.Option(
            True, "--bump-version/--no-bump-version",
            help="--no-bump-version keeps the version (descriptive fields only).",
        ),
        expected_version: Optional[int] = EXPECTED_VERSION,
        expected_revision: Optional[int] = EXPECTED_REVISION,
        actor: str = ACTOR,
        reason: Optional[str] = REASON,
        as_json: bool = JSON,
    ) -> None:
        """Change a profile. A spec change makes a new version; so do descriptive changes unless --no-bump-version.
        Each option given replaces that field whole: --feature and --tag give the complete new steering and tags."""
        fields = spec_and_details(name, description, model_id, sae_id, layer, steering, feature, tag, product, metadata)
        if fields.get("description") == "":
            fields["description"] = None  # --description "" clears it, as "" does in the API
        with acting(actor, reason):
            outcome = state.ledger.update_profile(
                profile_ref(profile_id), fields, bump_version=bump_version, expected_version=expected_version,
                expected_revision=expected_revision,
            )
        report(outcome, as_json, "update")

    @app.command()
    def show(
        profile_id: str = PROFILE,
        version: Optional[int] = typer.Option(None, "--version", min=1, help="Show the profile as of its N-th version."),
        as_of: Optional[datetime] = typer.Option(
            None, "--as-of", parser=values.iso_time, metavar="TIME",
            help="Show the profile as it stood at an ISO 8601 time (without an offset: UTC)."),
        as_json: bool = JSON,
    ) -> None:
        """Show a profile (now, or at a moment: the version in force if it is the active profile pinned to one; or at
        a version), replayed from its stream."""
        if version is not None and as_of:
            raise typer.BadParameter("give --version or --as-of, not both", param_hint="--as-of")
        pid = state.ledger.resolve_profile(profile_id, as_of=as_of)  # a name: the profile that held it then
        profile, latest, usage = state.ledger.get_profile(pid, version=version, as_of=as_of), None, None
        if version is None:  # now or then, as the API shows it: the version in force, and the executions by then
            profile, latest = in_force_state(profile)
            usage = state.reads.usage_until(pid, as_of or datetime.max.replace(tzinfo=timezone.utc))
        if as_json:
            emit_json(in_force_document(profile, latest, usage))
            return
        say(describe(profile, latest))
        if usage is not None:
            last = usage.last_executed_at
            say(f"  executions: {usage.execution_count}" + (f", the last at {last.isoformat()}" if last else ""))

    @app.command()
    def history(profile_id: str = PROFILE, as_json: bool = JSON) -> None:
        """Every version of a profile: who made it, when, why, and what it changed (its deletions, restores and
        activations are in `ledger log --profile`)."""
        records = state.ledger.replayed_history(profile_ref(profile_id))  # printed as it is replayed
        if as_json:
            emit_json_list(records)
        else:
            for record in records:
                say(history_line(record))

    @app.command("list")
    def list_profiles(
        tag: Optional[list[str]] = typer.Option(None, "--tag", "-t", help="Only profiles with this tag; repeatable.",
                                                callback=as_text),
        all_tags: bool = typer.Option(False, "--all-tags", help="Require every --tag (default: any)."),
        product: Optional[list[str]] = typer.Option(None, "--product", help="Only profiles for this product; "
                                                    "repeatable (any of them).", callback=as_text),
        search: Optional[str] = typer.Option(None, "--search", help=SEARCH_HELP,
                                             callback=as_text),
        sort: ListSort = typer.Option("name", "--sort", help="name (A→Z) or updated (newest first)."),
        limit: int = limit_option(50, "profiles"),
        cursor: Optional[str] = CURSOR,
        as_json: bool = JSON,
    ) -> None:
        """List live profiles from the read model, a page at a time."""
        page = state.reads.list_profiles(
            tags=tag or None, tags_match="all" if all_tags else "any", products=product, search=search,
            sort=LIST_SORTS[sort.value], limit=limit, cursor=cursor,
        )
        in_force = msgspec.structs.replace(page, items=[as_in_force(row, partial(state.reads.get_version, row.id))
                                                        for row in page.items])
        emit(as_json, {"profiles": [in_force_document(*pair) for pair in in_force.items],
                       "next_cursor": page.next_cursor},
             page_lines(in_force, lambda pair: list_line(*pair)), "no profiles")

    @app.command()
    def activate(
        profile_id: str = PROFILE,
        version: Optional[int] = typer.Option(None, "--version", min=1, help="Pin this version (default: follow the latest)."),
        actor: str = ACTOR,
        reason: Optional[str] = REASON,
        as_json: bool = JSON,
    ) -> None:
        """Make a profile the single active one."""
        with acting(actor, reason):
            pid = profile_ref(profile_id)
            outcome = state.ledger.activate_profile(pid, version=version)
        if as_json:  # as the API's answer and every query show it: the version in force, not the latest
            in_force, latest = in_force_state(outcome.profile)
            emit_json({"changed": outcome.changed, "position": outcome.position,
                       "profile": in_force_document(in_force, latest), "warnings": list(outcome.warnings),
                       "version": in_force.version, "pinned": version is not None,
                       "latest_version": outcome.profile.version if outcome.profile else None,
                       "spec": {name: getattr(in_force, name) for name in ("model_id", "sae_id", "layer", "steering")}})
            return
        report(outcome, False, "activate")
        say(in_force_line(outcome.profile.version, version))

    @app.command()
    def deactivate(actor: str = ACTOR, reason: Optional[str] = REASON, as_json: bool = JSON) -> None:
        """Leave no profile active."""
        with acting(actor, reason):
            report(state.ledger.deactivate_profile(), as_json, "deactivate")

    @app.command()
    def delete(
        profile_id: str = PROFILE,
        delete_executions: bool = typer.Option(False, "--delete-executions", help="Also drop its execution history."),
        expected_version: Optional[int] = EXPECTED_VERSION,
        expected_revision: Optional[int] = EXPECTED_REVISION,
        actor: str = ACTOR,
        reason: Optional[str] = REASON,
        as_json: bool = JSON,
    ) -> None:
        """Delete a profile (its history stays in the log; the name becomes free)."""
        with acting(actor, reason):
            outcome = state.ledger.delete_profile(
                profile_ref(profile_id), delete_executions=delete_executions, expected_version=expected_version,
                expected_revision=expected_revision,
            )
        report(outcome, as_json, "delete")

    @app.command("export")
    def export_profile(
        profile_id: str = PROFILE,
        version: Optional[int] = typer.Option(
            None, "--version", min=1, help="Export this version (default: the one in force, as reads show it).",
        ),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to a file ('-': stdout, the default)."),
    ) -> None:
        """Export a profile as a millm_profile JSON document."""
        document = state.ledger.export_profile(profile_ref(profile_id), version=version)
        if write_output(output, json.dumps(document, indent=2, ensure_ascii=False) + "\n"):
            say(f"exported to {output}")

    @app.command("import")
    def import_profile(
        path: Path = typer.Argument(..., metavar="PATH", help="A millm_profile document (or '-' for stdin)."),
        rename: bool = typer.Option(False, "--rename", help="On a name clash, import under a new name."),
        actor: str = ACTOR,
        reason: Optional[str] = REASON,
        as_json: bool = JSON,
    ) -> None:
        """Import a profile document."""
        if str(path) == "-" and sys.stdin is None:
            raise ImportFormatError("cannot read -: standard input is closed")
        try:
            text = typer.get_text_stream("stdin").read() if str(path) == "-" else path.read_text(encoding="utf-8")
            document = strict_json.loads(text.removeprefix("\ufeff"))  # some editors begin a UTF-8 file with a BOM
        except OSError as error:
            raise ImportFormatError(f"cannot read {path}: {error.strerror}") from None
        except UnicodeDecodeError as error:
            raise ImportFormatError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason})") from None
        except ValueError as error:  # (after UnicodeDecodeError, a ValueError too)
            raise ImportFormatError(f"{path} is not valid JSON: {json_error(error)}") from None
        except RecursionError:
            raise ImportFormatError(f"{path} is nested too deeply to be a profile document") from None
        except strict_json.RepeatedKeyError as error:
            raise ImportFormatError(f"{path}: {error}") from None
        with acting(actor, reason):
            report(state.ledger.import_profile(document, rename=rename), as_json, "import")
