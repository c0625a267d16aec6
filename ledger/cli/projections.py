"""``ledger projections``: where each read model is, the events it parked, and retrying them after a fix."""

from __future__ import annotations

from typing import Any, Optional

import typer

from ledger.cli.commands import Commands
from ledger.cli.context import JSON, emit, emit_json, say, state
from ledger.outages import missing_table

projections_app = Commands(
    name="projections",
    help="Read models: with no command, each one's position and the events it parked (could not apply); "
    "`ledger projections retry` applies parked events again after a fix.",
    invoke_without_command=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(projections_app)


@projections_app.callback()
def projections(ctx: typer.Context, as_json: bool = JSON) -> None:
    """List each read model's position and the events it parked (an event it could not apply, with the error);
    exits 1 while any event is parked, a read model lost a table, or one is past the log's end."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"json": as_json}  # `ledger projections --json retry` answers in JSON too
        return
    from projections.registry import PROJECTION_NAMES

    reads = state.reads  # over this process's one application: refused where nothing was recorded, makes nothing
    head = reads.log.head()
    positions = reads.store.positions(PROJECTION_NAMES)
    parked = reads.store.parked()
    problems = read_model_problems(reads.store, head, positions)
    failed = bool(parked or problems)
    if as_json:
        emit_json({"log_position": head, "positions": positions, "parked": parked, "problems": problems})
        raise typer.Exit(1 if failed else 0)
    say(f"log position {head}")
    for name, position in positions.items():
        count = sum(1 for event in parked if event.projection == name)
        say(f"  {name:<18} position {position:<10} lag {max(head - position, 0):<8} parked {count}"
                   + (f"  ({name} {problems[name]})" if name in problems else ""))
    if parked:
        say("parked events (`ledger projections retry` applies them again):")
    for event in parked:
        say(
            f"  {event.projection:<18} position {event.position:<10} {event.event_type} {event.originator_id}"
            f"  attempts {event.attempts}  {event.error}"
        )
    raise typer.Exit(1 if failed else 0)


def read_model_problems(store: Any, head: int, positions: dict[str, int]) -> dict[str, str]:
    """What keeps a read model from answering truly, by its name: a table it lost (dropped by hand), or a position
    past the log's end (events removed from it)."""
    from projections.registry import select

    projections = select()
    gone = store.missing_tables(table.name for projection in projections for table in projection.tables)
    problems = {}
    for projection in projections:
        lost = sorted(gone & {table.name for table in projection.tables})
        if lost:
            problems[projection.name] = f"lost its table(s) {', '.join(lost)}: run `ledger db init`, which rebuilds it"
        elif positions.get(projection.name, 0) > head:
            problems[projection.name] = "is past the log's end (events were removed from it): run `ledger rebuild`"
    return problems


def retry_line(outcome: Any) -> str:
    """A parked event retried: applied, or the error it still fails with."""
    parked = outcome.parked
    result = "applied" if outcome.applied else f"still fails: {outcome.error}"
    return f"{parked.projection} position {parked.position} ({parked.event_type}): {result}"


@projections_app.command()
def retry(
    ctx: typer.Context,
    names: Optional[list[str]] = typer.Argument(None, help="Read models whose parked events to retry (default: all)."),
    position: Optional[int] = typer.Option(None, "--position", min=1, help="Only the event at this log position."),
    as_json: bool = JSON,
) -> None:
    """Apply parked events again, in log order, onto the read models' current rows (after a fix).

    Those that apply leave the parked list; the others stay, with the new error, and the exit status is 1. An
    event whose stream had later events applied since stays parked too (applied now, it would set the rows back):
    `ledger rebuild NAME` rebuilds a read model from position 0, applying every event in order.
    """
    from projections.registry import select

    chosen = select(names or None)
    store, log = state.reads.store, state.reads.log
    outcomes = [outcome for projection in chosen
                for outcome in store.retry_parked(projection, log.event_at, log.later_versions, position)]
    emit(as_json or (ctx.obj or {}).get("json", False), outcomes, map(retry_line, outcomes), "no parked events")
    if any(not outcome.applied for outcome in outcomes):
        raise typer.Exit(1)


def applied_positions() -> dict[str, int]:
    """The log position each read model says it applied (none where the read side was never made)."""
    from projections.registry import PROJECTION_NAMES

    try:
        return state.reads.store.positions(PROJECTION_NAMES)
    except Exception as error:
        if missing_table(error) is None:
            raise
        return {}
