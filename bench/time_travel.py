"""Benchmark: a profile as it stood at version k of a 10,000-event stream (target: p99 under 10 ms).

Builds one profile whose stream holds ``--events`` events, all through the ledger's commands (spec revisions,
descriptive revisions, edits that keep the version, activations and deactivations), then times
``get_profile(id, version=k)`` and ``get_profile(id, as_of=t)`` for random k and t, and, as the baseline in
the same run, the current state ``get_profile(id)``. ``--snapshot-interval 0`` takes no snapshots: every
time-travel query replays the stream from its first event (the code before snapshots did that).

    python bench/time_travel.py                                   # SQLite, a temporary file
    python bench/time_travel.py --database postgresql://...       # PostgreSQL
    python bench/time_travel.py --postgres                        # a throwaway PostgreSQL server
    python bench/time_travel.py --smoke
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import datetime
from pathlib import Path
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Figure, percentile, report, scratch_database, summary_ms, timed_ms  # noqa: E402
from ledger.application import SNAPSHOT_INTERVAL, SNAPSHOT_INTERVAL_ENV, ProfileLedger  # noqa: E402
from ledger.settings import Database  # noqa: E402

NAME = "profile at version k of a 10,000-event stream (time travel)"
TARGET_MS = 10.0


def build(ledger: ProfileLedger, events: int, seed: int = 5) -> tuple[UUID, float]:
    """One profile with ``events`` events in its stream; returns its id and the seconds the commands took."""
    rng = random.Random(seed)
    started = time.perf_counter()
    profile_id = ledger.create_profile(
        {"name": "time traveller", "model_id": "gemma-2-2b", "sae_id": "res-16k", "layer": 12,
         "steering": {7: 0.5}, "tags": ["bench"], "metadata": {"seed": seed}}
    ).profile.id
    active = False
    for step in range(1, events):  # the creation was the first event
        kind = rng.random()
        if kind < 0.35:
            steering = {rng.randrange(16384): round(rng.uniform(-2, 2), 3) for _ in range(rng.randint(1, 6))}
            ledger.update_profile(profile_id, {"steering": steering, "layer": rng.choice([6, 12, 18])})
        elif kind < 0.55:
            ledger.update_profile(profile_id, {"description": f"revision {step}", "tags": ["bench", f"t{step % 9}"]})
        elif kind < 0.8:
            ledger.update_profile(
                profile_id, {"metadata": {"step": step, "note": f"edit {step}"}}, bump_version=False
            )
        elif not active:
            ledger.activate_profile(profile_id)
            active = True
        else:
            ledger.deactivate_profile()
            active = False
    return profile_id, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--postgres", action="store_true", help="start a throwaway PostgreSQL server for the run")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=300, help="queries of each kind")
    parser.add_argument("--snapshot-interval", type=int, default=SNAPSHOT_INTERVAL, help="0: no snapshots")
    parser.add_argument("--smoke", action="store_true", help="tiny run: 300 events, 30 queries of each kind")
    args = parser.parse_args(argv)
    if args.smoke:
        args.events, args.runs = 300, 30
    with scratch_database(args.database, postgres=args.postgres) as url:
        database = Database(url)
        env = {**database.eventsourcing_env(), SNAPSHOT_INTERVAL_ENV: str(args.snapshot_interval)}
        with ProfileLedger(env=env) as ledger:
            profile_id, build_s = build(ledger, args.events)
            events = list(ledger.events.get(profile_id))
            print(
                f"built a {len(events):,}-event stream on {database.display()} in {build_s:.1f}s "
                f"({args.events / build_s:,.0f} events/s, snapshot interval {args.snapshot_interval})",
                flush=True,
            )
            latest = ledger.get_profile(profile_id).version
            first, last = events[0].timestamp, events[-1].timestamp
            rng = random.Random(11)
            versions = [rng.randint(1, latest) for _ in range(args.runs)]
            times = [first + (last - first) * rng.random() for _ in range(args.runs)]
            timed_ms(lambda k: ledger.get_profile(profile_id, version=k), versions[:10])  # warm up
            at_version = timed_ms(lambda k: ledger.get_profile(profile_id, version=k), versions)
            as_of = timed_ms(lambda t: ledger.get_profile(profile_id, as_of=t), times)
            current = timed_ms(lambda _: ledger.get_profile(profile_id), range(args.runs))
            check_agrees_with_replay(ledger, profile_id, events, versions[:5], times[:5])
    p99, baseline = percentile(at_version, 0.99), percentile(current, 0.99)
    print(f"get_profile(version=k), k random in 1..{latest}: {summary_ms(at_version)}")
    print(f"get_profile(as_of=t), t random over the stream's life: {summary_ms(as_of)}")
    print(f"get_profile(id), the current state: {summary_ms(current)}", flush=True)
    figure = Figure(
        name=NAME,
        value=p99,
        unit="ms",
        target=f"p99 < {TARGET_MS:.0f} ms",
        met=p99 < TARGET_MS,
        baseline=baseline,
        baseline_label="current state get_profile(id), p99, same run",
        detail=(
            f"{args.events:,} events, {latest} versions, snapshot interval {args.snapshot_interval}, "
            f"{database.display().split(':', 1)[0]}; version=k {summary_ms(at_version)}; "
            f"as_of=t {summary_ms(as_of)}"
        ),
    )
    return report([figure], smoke=args.smoke)


def check_agrees_with_replay(
    ledger: ProfileLedger, profile_id: UUID, events: list, versions: list[int], times: list[datetime]
) -> None:
    """A few answers against a replay from the first event (a fast wrong answer is no answer)."""
    for k in versions:
        replayed = None
        for domain_event in events:
            if getattr(domain_event, "version", 1) > k:
                break
            replayed = domain_event.mutate(replayed)
        assert replayed is not None and ledger.get_profile(profile_id, version=k).revision == replayed.version
    for t in times:
        count = next((n for n, e in enumerate(events) if e.timestamp > t), len(events))
        assert ledger.get_profile(profile_id, as_of=t).revision == count


if __name__ == "__main__":
    sys.exit(main())
