"""``ledger log``: the event log itself, oldest first."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Optional, TypeVar

import typer
from msgspec import to_builtins

from ledger.chain import VerifyReport
from ledger.checkpoint import Checkpoint
from ledger.cli.context import JSON, as_text, emit_json, limit_option, plain, profile_ref, say, state, write_output
from ledger.cli.projections import applied_positions
from ledger.domainmodel import profile_of
from ledger.errors import SigningKeyError, ValidationError
from ledger.event_log import checked_event_type, refuse_past_head
from ledger.outages import first_line, refuses_writes
from ledger.signing import PublicKeyCheck, load_public_key, public_key_pem
from ledger.signing.records import OTHER_KEY
from ledger.values import INT64_MAX
from projections.audit import row_of

PAGE = 1000
T = TypeVar("T")


def register(app: typer.Typer) -> None:
    @app.command()
    def verify(
        public_key: Optional[Path] = typer.Option(
            None, "--public-key", help="Check the signatures with this public key (PEM or raw 32 bytes; default: "
            "the one of the signing key, LEDGER_SIGNING_KEY)."),
        checkpoint: Optional[Path] = typer.Option(
            None, "--checkpoint", help="A checkpoint file (`ledger checkpoint -o`): prove the log still extends it."),
        as_json: bool = JSON,
    ) -> None:
        """Walk the whole log: the chain, every event's and snapshot's signature, and (with --checkpoint) the
        signed head it must still extend, and that it reaches as far as the read models applied it; then compare
        every read model with what the log makes of it (rows edited, deleted or added with SQL: `ledger rebuild`
        repairs them). Exit 1 and name the first bad position (or row) if anything was tampered with, or if a
        rebuild is running. The comparison needs the signing key: with only --public-key it is skipped (`--json`:
        read_models_compared false), and the log walk alone decides."""
        key = None if public_key is None else PublicKeyCheck(_read(public_key, load_public_key, "public key"))
        extended = None if checkpoint is None else Checkpoint.parse(_read(checkpoint, Path.read_text, "checkpoint"))
        applied = applied_positions()  # before the walk: the log only grows past them meanwhile
        report = _past_the_log(state.ledger.verify_log(full=True, public_key=key, checkpoint=extended), applied)
        compared = False
        if report.ok:
            report, compared = _compare_read_models(report)
        if as_json:
            emit_json({**to_builtins(report), "read_models_compared": compared})
        elif report.ok:
            extends = f"; extends the checkpoint at position {extended.position}" if extended else ""
            head = f"head link {report.head_link}" if report.head_link else "the log is empty"
            say(f"ok: {report.checked} events verified; {head}{extends}")
        else:
            typer.echo(report.tampered(), err=True)
            if report.problem == "forged" and report.position == 1 and OTHER_KEY in (report.detail or ""):
                typer.echo("hint: the log's first record is signed by another key: if that is the log's own, this "
                           "check has the wrong one (LEDGER_SIGNING_KEY, --public-key)", err=True)
        if not report.ok:
            raise typer.Exit(1)

    @app.command()
    def checkpoint(
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write it to this file (keep it outside "
                                              "the database's reach); '-' or none: print it."),
    ) -> None:
        """Verify the whole log, then sign a statement of its head (position, link, time, key id)."""
        ledger = state.ledger
        report = ledger.verify_log(full=True)
        if not report.ok:
            typer.echo(report.tampered(), err=True)
            raise typer.Exit(1)
        signed = Checkpoint.of(report, ledger.mapper.keys)  # type: ignore[attr-defined]
        if write_output(output, signed.to_json()):
            typer.echo(f"checkpoint at position {signed.position} written to {output}", err=True)

    @app.command("public-key")
    def public_key_command(
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write it to this file ('-' or none: "
                                              "print it)."),
    ) -> None:
        """Print the public key that verifies this ledger's signatures (PEM), for `verify --public-key`."""
        write_output(output, public_key_pem(state.ledger.mapper.keys.public().public_key))  # type: ignore[attr-defined]

    @app.command()
    def log(
        after: int = typer.Option(0, "--after", min=0, max=INT64_MAX,
                                  help="Start after this log position (past the log's head: refused)."),
        limit: Optional[int] = limit_option(None, "events", most=None),
        profile: Optional[str] = typer.Option(
            None, "--profile", callback=as_text,
            help="Only the events of this profile (id, or name: a deleted one's last): its versions, activations, "
            "executions, deletion and restore."),
        actor: Optional[str] = typer.Option(None, "--actor", callback=as_text, help="Only events by this actor."),
        event_type: Optional[str] = typer.Option(
            None, "--type", callback=as_text, help="Only this event type, e.g. Profile.Deleted."),
        as_json: bool = JSON,
    ) -> None:
        """Print the event log in commit order: position, time, actor, event and what it concerns. Filtered, it
        reads the whole log from --after on, as `ledger verify` does."""
        ledger = state.ledger
        checked_event_type(event_type, "--type")
        refuse_past_head(after or None, int(ledger.recorder.max_notification_id() or 0), "--after")
        actor, event_type = (actor or "").strip(), (event_type or "").strip()  # trimmed; blank: no filter (as the API)
        profile_id = profile_ref(profile.strip()) if profile and profile.strip() else None
        position, printed, entries = after, 0, []
        while (limit is None or printed < limit) and position < INT64_MAX:  # no position comes after the last
            page = PAGE if limit is None or profile_id or actor or event_type else min(PAGE, limit - printed)
            batch = ledger.recorder.select_notifications(start=position + 1, limit=page)
            if not batch:
                break
            for notification in batch:
                if limit is not None and printed >= limit:
                    break
                event = ledger.mapper.to_domain_event(notification)
                kind = type(event).__qualname__
                if (profile_id and profile_of(event) != profile_id or actor and getattr(event, "actor", None) != actor
                        or event_type and kind != event_type):
                    continue
                row = row_of(notification.id, event)  # what the API's /api/events answers of it
                entry = {
                    "position": row.position,
                    "time": row.recorded_at.isoformat(),
                    "actor": row.actor,
                    "type": kind,
                    "aggregate_id": str(row.originator_id),
                    "aggregate_version": row.originator_version,
                    "reason": row.reason,
                    "profile_id": row.profile_id,
                    "correlation_id": row.correlation_id,
                    "data": row.payload,
                }
                if as_json:
                    entries.append(entry)
                else:
                    reason = f"  reason={json.dumps(entry['reason'])}" if entry["reason"] else ""
                    say(
                        f"{entry['position']:>8}  {entry['time']}  {entry['actor']:<12}  {kind:<24} "
                        f"{entry['aggregate_id']}@{entry['aggregate_version']}{reason}"
                    )
                printed += 1
            position = batch[-1].id
        if as_json:
            emit_json(entries)


def _past_the_log(report: VerifyReport, applied: dict[str, int]) -> VerifyReport:
    """The report, or (the walk passed) one that fails with ``truncated`` where read models applied events past the
    log's end: the log's tail was cut (or the database restored from an older backup), and the read models are
    what is left of it, which a rebuild would make them forget (or their positions were edited: the walk cannot
    tell, and either is tampering)."""
    end = report.head_position or 0
    ahead = sorted(name for name, position in applied.items() if position > end)
    if not report.ok or not ahead:
        return report
    furthest = max(applied[name] for name in ahead)
    return replace(report, ok=False, problem="truncated", position=furthest, detail=(
        f"the log ends at position {end}, before position {furthest}, which the read models applied "
        f"({', '.join(ahead)}): events were removed from its end (or those positions were moved past it); what "
        "the read models show of them goes with the next `ledger rebuild`"))


def _compare_read_models(report: VerifyReport) -> tuple[VerifyReport, bool]:
    """The passing report, or one that fails with ``read_model_altered`` and the first read-model row that differs
    from what the verified log makes of it, or with ``read_model_not_compared`` when one could not be compared (its
    recorded definition is not this version's: an upgrade not yet started, or a row edited to hide edited rows; or
    the database runs a trigger, a rule or an event trigger the ledger did not make); and whether every read model
    was compared."""
    from projections.runner import HOOKED, REDEFINED, compare_with_log
    from projections.schema import hold_rebuild_lock

    try:
        state.ledger.mapper.keys.key_id  # type: ignore[attr-defined]  # noqa: B018 - without it nothing is compared
        release = hold_rebuild_lock(state.settings.database)  # a rebuild's tables are these: one at a time
        try:
            comparisons = compare_with_log(state.settings.database)
        finally:
            release()
    except SigningKeyError as error:
        typer.echo(f"note: the read models were not compared with the log (that needs its signing key): "
                   f"{error.message}", err=True)
        return report, False
    except Exception as error:
        if not refuses_writes(error):
            raise
        typer.echo("note: the read models were not compared with the log (that builds them afresh beside the live "
                   f"ones, and the database takes no writes: {first_line(error)})", err=True)
        return report, False
    hooked = next((c.not_compared for c in comparisons if (c.not_compared or "").startswith(HOOKED)), None)
    if hooked:  # a trigger of the database's owner, say: what hides a row in one table can hide it in both
        return replace(report, ok=False, problem="read_model_not_compared",
                       detail=plain(f"the read models were not compared: {hooked}, then verify again")), False
    passed_by = [c for c in comparisons if c.not_compared and c.not_compared != REDEFINED]
    for passed in passed_by:
        typer.echo(f"note: read model {passed.projection} not compared ({passed.not_compared})", err=True)
    altered = [c.difference for c in comparisons if c.difference is not None]
    skipped = [c for c in comparisons if c.not_compared == REDEFINED]
    if not altered and skipped:  # an edited definition row would hide edited rows: unverified is not verified
        return replace(report, ok=False, problem="read_model_not_compared", detail=plain(
            "; ".join(f"read model {c.projection} was not compared: {c.not_compared}" for c in skipped)
            + ": start a server (or `ledger rebuild`), then verify again")), False
    if not altered:
        return report, not passed_by
    tables = [table for table in dict.fromkeys(d.table for d in altered[1:]) if table != altered[0].table]
    others = f"; other read-model tables differ too: {', '.join(tables)}" if tables else ""
    first = altered[0]
    return replace(report, ok=False, problem="read_model_altered", position=first.position,
                   detail=plain(first.describe() + others + "; `ledger rebuild` makes them again from the log")), True


def _read(path: Path, load: Callable[[Path], T], what: str) -> T:
    try:
        return load(path)
    except (OSError, ValueError) as error:
        raise ValidationError(f"cannot read the {what} {path}: {error}", field=what.replace(" ", "_")) from None
