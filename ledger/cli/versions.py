"""Version commands: versions, diff, revert, restore, active. Each takes a profile's name or id."""

from __future__ import annotations

from typing import Optional

import typer

from ledger.cli.context import (
    ACTOR, EXPECTED_REVISION, EXPECTED_VERSION, JSON, PROFILE, REASON, acting, emit, emit_json, profile_ref, say,
    shown, state,
)
from ledger.cli.profiles import describe, in_force_line, in_force_state, report, version_line
from ledger.errors import NoActiveProfileError


def register(app: typer.Typer) -> None:
    @app.command()
    def versions(profile_id: str = PROFILE, as_json: bool = JSON) -> None:
        """Every version of a profile, oldest first, from the read model (deleted profiles keep theirs)."""
        pid = profile_ref(profile_id)
        page = state.reads.list_versions(pid, limit=500, cursor=None)
        rows = list(page.items)
        while page.next_cursor is not None:
            page = state.reads.list_versions(pid, limit=500, cursor=page.next_cursor)
            rows += page.items
        emit(as_json, {"versions": rows}, (
            version_line(row, f"name={shown(row.name)} layer={shown(row.layer)} steering={shown(row.steering)}")
            for row in rows
        ))

    @app.command()
    def diff(
        profile_id: str = PROFILE,
        from_version: Optional[int] = typer.Option(None, "--from", min=1, help="Default: the version before --to."),
        to_version: Optional[int] = typer.Option(None, "--to", min=1, help="Default: the latest version."),
        as_json: bool = JSON,
    ) -> None:
        """Field-by-field differences between two versions of a profile."""
        changes = state.ledger.diff_versions(profile_ref(profile_id), from_version=from_version, to_version=to_version)
        if as_json:
            emit_json(changes)
            return
        steering = changes.steering
        lines = [f"  {change.field}: {shown(change.before)} → {shown(change.after)}" for change in changes.changes]
        lines += [f"  steering +{index}={shown(strength)}" for index, strength in steering.added.items()]
        lines += [f"  steering -{index} (was {shown(strength)})" for index, strength in steering.removed.items()]
        lines += [
            f"  steering {index}: {shown(change.before)} → {shown(change.after)}"
            for index, change in steering.changed.items()
        ]
        say(f"{changes.name}: version {changes.from_version} → {changes.to_version}")
        for line in lines or ["  no differences"]:
            say(line)

    @app.command()
    def revert(
        profile_id: str = PROFILE,
        version: int = typer.Option(..., "--version", min=1, help="The version whose content becomes the new version."),
        expected_version: Optional[int] = EXPECTED_VERSION,
        expected_revision: Optional[int] = EXPECTED_REVISION,
        actor: str = ACTOR,
        reason: Optional[str] = REASON,
        as_json: bool = JSON,
    ) -> None:
        """Make a new version equal to an earlier one (history is never rewritten)."""
        with acting(actor, reason):
            outcome = state.ledger.revert_profile(profile_ref(profile_id), version, expected_version=expected_version,
                                                  expected_revision=expected_revision)
        report(outcome, as_json, "revert")

    @app.command()
    def restore(
        profile_id: str = typer.Argument(..., metavar="NAME_OR_ID", help="The deleted profile's name or id."),
        actor: str = ACTOR,
        reason: Optional[str] = REASON,
        as_json: bool = JSON,
    ) -> None:
        """Bring a deleted profile back under its name (refused while another profile holds the name)."""
        with acting(actor, reason):
            outcome = state.ledger.restore_profile(profile_ref(profile_id))
        report(outcome, as_json, "restore")

    @app.command()
    def active(as_json: bool = JSON) -> None:
        """The active profile and the version in force (pinned, or following the latest)."""
        slot = state.ledger.active_slot()
        if slot is None or slot.profile_id is None:
            raise NoActiveProfileError("no profile is active; activate one with `ledger activate NAME_OR_ID`")
        profile = state.ledger.get_profile(slot.profile_id)
        in_force, behind = in_force_state(profile)
        latest = profile.version
        if as_json:
            emit_json({"profile": in_force, "version": in_force.version, "pinned": slot.pinned_version is not None,
                       "latest_version": latest})
            return
        say(describe(in_force, behind))
        say(in_force_line(latest, slot.pinned_version))
        say(f"  steering in force: {shown(in_force.steering)}")
