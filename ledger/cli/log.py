"""``ledger log``: the event log itself, oldest first."""

from __future__ import annotations

import json
from typing import Optional

import typer

from ledger.cli.context import JSON, emit_json, state

PAGE = 1000


def register(app: typer.Typer) -> None:
    register_verify(app)

    @app.command()
    def log(
        after: int = typer.Option(0, "--after", help="Start after this log position."),
        limit: Optional[int] = typer.Option(None, "--limit", help="At most this many events."),
        as_json: bool = JSON,
    ) -> None:
        """Print the event log in commit order: position, time, actor, event and what it concerns."""
        ledger = state.ledger
        position, printed, entries = after, 0, []
        while limit is None or printed < limit:
            batch = ledger.recorder.select_notifications(start=position + 1, limit=PAGE)
            if not batch:
                break
            for notification in batch:
                if limit is not None and printed >= limit:
                    break
                event = ledger.mapper.to_domain_event(notification)
                kind = type(event).__qualname__
                entry = {
                    "position": notification.id,
                    "time": event.timestamp.isoformat(),
                    "actor": getattr(event, "actor", None),
                    "type": kind,
                    "aggregate_id": str(notification.originator_id),
                    "aggregate_version": notification.originator_version,
                    "reason": getattr(event, "reason", None),
                }
                if as_json:
                    entries.append(entry)
                else:
                    reason = f"  reason={json.dumps(entry['reason'])}" if entry["reason"] else ""
                    typer.echo(
                        f"{entry['position']:>8}  {entry['time']}  {entry['actor']:<12}  {kind:<24} "
                        f"{entry['aggregate_id']}@{entry['aggregate_version']}{reason}"
                    )
                printed += 1
            position = batch[-1].id
        if as_json:
            emit_json(entries)


def register_verify(app: typer.Typer) -> None:
    @app.command()
    def verify(as_json: bool = JSON) -> None:
        """Walk the tamper-evident chain; exit 1 and name the first bad position if the log was tampered with."""
        report = state.ledger.verify_log()
        if as_json:
            emit_json(report)
        elif report.ok:
            typer.echo(f"ok: {report.checked} events verified; head link {report.head_link}")
        else:
            typer.echo(f"TAMPERED: {report.problem} at position {report.position}: {report.detail}", err=True)
        if not report.ok:
            raise typer.Exit(1)
