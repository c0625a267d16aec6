"""Benchmark: rebuilding every read model from a 1,000,000-event log, against a raw SELECT of the same rows.

    python bench/rebuild.py --database postgresql://…  [--events 1000000] [--smoke]

Loading the log through commands would take hours, so a template of a few thousand events is written by the
real ``ProfileLedger`` commands (profiles created, revised, edited, renamed, activated and deactivated,
executions recorded, some profiles deleted), then copied at the SQL level as often as needed: every copy gets
fresh aggregate ids, its own profile names (so its name-index aggregates are its own), and continues the
active slot's stream; each copied row is signed with the ledger's key (as the service signs what it stores)
and linked by the chain trigger, so the log stays valid for the app. A database that already holds the
events asked for is reused as it is.

Measured in the same run, on the same server: the baseline reads every event row (the columns the log is
read with) through a server-side cursor into Python; then :func:`projections.runner.rebuild` rebuilds all
read models. Both are reported in events/s.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import re
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Figure, report, scratch_database  # noqa: E402
from ledger.application import ProfileLedger  # noqa: E402
from ledger.domainmodel import ActiveSlot, ProfileName  # noqa: E402
from ledger.settings import Database  # noqa: E402
from ledger.signing import HEADER_SIZE, SigningKeys  # noqa: E402
from projections.runner import rebuild  # noqa: E402

FIGURE = "rebuild of all projections from a 1,000,000-event log"
TARGET = 50_000.0  # events/s
MARK = "c000000"  # in every template name; each copy writes its own number here (same length)
TEMPLATE_PROFILES = 400
SMOKE_PROFILES = 60
_HEX_ID = re.compile(rb"[0-9a-f]{32}")
EVENTS = f"{ProfileLedger.name.lower()}_events"  # the library names the table after the application


def write_template(database: Database, profiles: int, seed: int = 7) -> None:
    """A realistic stretch of history, through the real commands."""
    rng = random.Random(seed)
    words = ["tone", "formal", "terse", "warm", "legal", "support", "sales", "pirate", "calm", "brief"]
    live: list[uuid.UUID] = []
    with ProfileLedger(env=database.eventsourcing_env(pool_size=2)) as app:
        for number in range(profiles):
            steering = {rng.randrange(16384): round(rng.uniform(-4, 4), 3) for _ in range(rng.randint(2, 24))}
            outcome = app.create_profile({
                "name": f"bench-{MARK} {rng.choice(words)} profile {number:04d}",
                "description": " ".join(rng.choices(words, k=rng.randint(3, 20))),
                "model_id": "gpt2-small",
                "sae_id": "res-jb",
                "layer": rng.choice([6, 8, 10]),
                "steering": steering,
                "tags": rng.sample(words, rng.randint(0, 3)),
                "products": rng.sample(["chat", "mail", "docs"], rng.randint(0, 2)),
                "metadata": {"team": rng.choice(words), "ticket": rng.randrange(10_000)},
            })
            live.append(outcome.profile.id)
            for _ in range(rng.randint(0, 6)):
                _one_more_thing(app, rng, live, words, number)
        app.deactivate_profile()  # every copy starts with the slot empty, as the template did


def _one_more_thing(app: ProfileLedger, rng: random.Random, live: list[uuid.UUID], words: list[str], n: int) -> None:
    profile_id = rng.choice(live)
    choice = rng.random()
    if choice < 0.25:
        app.update_profile(profile_id, {"steering": {rng.randrange(16384): round(rng.uniform(-4, 4), 3)
                                                     for _ in range(rng.randint(2, 24))}})
    elif choice < 0.35:
        app.update_profile(profile_id, {"description": " ".join(rng.choices(words, k=8))}, bump_version=False)
    elif choice < 0.45:
        app.update_profile(profile_id, {"tags": rng.sample(words, 2), "metadata": {"team": rng.choice(words)}})
    elif choice < 0.50:
        app.update_profile(profile_id, {"name": f"bench-{MARK} renamed {n:04d} {rng.randrange(10**6)}"})
    elif choice < 0.58:
        app.activate_profile(profile_id, version=None if rng.random() < 0.7 else 1)
    elif choice < 0.61:
        app.deactivate_profile()
    elif choice < 0.96:
        app.record_execution(
            profile_id if rng.random() < 0.9 else None,
            run_id=f"run-{rng.randrange(10**6)}",
            seed=rng.randrange(1000),
            entity_count=rng.randrange(500),
            duration_ms=round(rng.uniform(5, 900), 2),
            metadata={"host": rng.choice(words)},
            kind=rng.choice(["generation", "external"]),
        )
    elif len(live) > 5:
        slot = app.active_slot()
        if slot is not None and slot.profile_id == profile_id:
            app.deactivate_profile()
        app.delete_profile(profile_id, delete_executions=rng.random() < 0.5)
        live.remove(profile_id)


def event_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        exists = conn.execute(f"SELECT to_regclass('{EVENTS}') IS NOT NULL").fetchone()[0]
        return conn.execute(f"SELECT count(*) FROM {EVENTS}").fetchone()[0] if exists else 0


def replicate(url: str, events: int) -> None:
    """Append copies of the log's first stretch (the template) until the log holds ``events`` rows.

    A log that already holds copies (a smaller run's) is extended: the copies go on from the highest copy
    number there, and the active slot's stream from its last version.
    """
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT originator_id, originator_version, topic, state FROM {EVENTS} ORDER BY notification_id"
        ).fetchall()
    marks = [_copy_number(state) for _originator, _version, _topic, state in rows]
    template_end = next((index for index, mark in enumerate(marks) if mark), len(rows))
    if MARK.encode() not in rows[0][3]:
        raise SystemExit(f"{EVENTS} does not start with a template written by this script: refusing to extend it")
    slot_id = ActiveSlot.create_id()
    slot_version = max(version for originator, version, _, _ in rows if originator == slot_id)
    name_keys: dict[uuid.UUID, str] = {}
    for originator, _version, topic, state in rows[:template_end]:
        if topic.endswith("ProfileName.Registered"):
            name_keys[originator] = re.search(rb'"key":\s*"([^"]*)"', state).group(1).decode()
    # The slot opens once (version 1); every copy continues its stream.
    template = [row for row in rows[:template_end] if not (row[0] == slot_id and row[1] == 1)]
    have = len(rows)
    copy_number = max(marks, default=0)
    keys = SigningKeys.from_env(os.environ)
    with psycopg.connect(url) as conn:
        while have < events:
            copy_number += 1
            mark = f"c{copy_number:06d}"
            ids: dict[bytes, bytes] = {}
            for originator in {row[0] for row in template}:
                if originator == slot_id:
                    new = slot_id
                elif originator in name_keys:
                    new = ProfileName.create_id(name_keys[originator].replace(MARK, mark))
                else:
                    new = uuid.uuid4()
                ids[originator.hex.encode()] = new.hex.encode()
            take = template[: events - have]
            slot_base = slot_version
            with conn.cursor() as cur:
                cur.execute(f"LOCK TABLE {EVENTS} IN EXCLUSIVE MODE")
                records = []
                for originator, version, topic, state in take:
                    if originator == slot_id:
                        version += slot_base - 1
                        slot_version = version
                    payload = _HEX_ID.sub(lambda m: ids.get(m.group(0), m.group(0)), state[HEADER_SIZE:])
                    payload = payload.replace(MARK.encode(), mark.encode())
                    records.append((uuid.UUID(ids[originator.hex.encode()].decode()), version, topic, payload))
                # Signed as the service signs a save (ledger.signing), the copy as one: the log verifies.
                states = keys.seal_all(records)
                with cur.copy(
                    f"COPY {EVENTS} (originator_id, originator_version, topic, state) FROM STDIN"
                ) as copy:
                    for (new_id, version, topic, _), state in zip(records, states):
                        copy.write_row((new_id, version, topic, state))
                # and the head the copy leaves, as each insert transaction signs it
                position, link = cur.execute(f"SELECT notification_id, link FROM {EVENTS}_chain "
                                             "ORDER BY notification_id DESC LIMIT 1").fetchone()
                cur.execute(f"INSERT INTO {EVENTS}_heads VALUES (%s, %s)", (position, keys.sign_head(position, link)))
            conn.commit()
            have += len(take)
            print(f"\rlog: {have:,} events", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


_COPY_MARK = re.compile(rb"bench-c(\d{6})")


def _copy_number(state: bytes) -> int:
    """The copy an event belongs to, by the mark in its names (0: the template, or no name in it)."""
    found = _COPY_MARK.search(state)
    return int(found.group(1)) if found else 0


def load_log(database: Database, events: int, profiles: int) -> int:
    have = event_count(database.url)
    if have >= events:
        print(f"reusing the log already there: {have:,} events", file=sys.stderr)
        return have
    if have == 0:
        started = time.perf_counter()
        write_template(database, profiles)
        print(f"template: {event_count(database.url):,} events through commands in "
              f"{time.perf_counter() - started:.1f}s", file=sys.stderr)
    started = time.perf_counter()
    replicate(database.url, events)
    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {EVENTS}")
    have = event_count(database.url)
    print(f"replicated to {have:,} events in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return have


def raw_select(url: str) -> tuple[int, float]:
    """Every event row into Python through a server-side cursor: (rows, seconds)."""
    started = time.perf_counter()
    count = 0
    with psycopg.connect(url) as conn, conn.cursor(name="bench_raw_select") as cur:
        cur.execute(
            f"SELECT notification_id, originator_id, originator_version, topic, state FROM {EVENTS} "
            "ORDER BY notification_id"
        )
        while rows := cur.fetchmany(10_000):
            count += len(rows)
    return count, time.perf_counter() - started


def load_average() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="A PostgreSQL URL (default: a throwaway server started here).")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--smoke", action="store_true", help="A few thousand events: checks the script runs.")
    args = parser.parse_args()
    with scratch_database(args.database, postgres=True, shared_buffers="128MB" if args.smoke else "1GB") as url:
        database = Database(url)
        events = 5_000 if args.smoke else args.events
        total = load_log(database, events, SMOKE_PROFILES if args.smoke else TEMPLATE_PROFILES)
        loads = [load_average()]
        raw_select(url)  # warm the cache: both measurements read from memory
        rows, raw_seconds = raw_select(url)
        baseline = rows / raw_seconds
        loads.append(load_average())
        started = time.perf_counter()
        positions = rebuild(database, progress=False)
        seconds = time.perf_counter() - started
        loads.append(load_average())
        value = total / seconds
        figure = Figure(
            name=FIGURE,
            value=value,
            unit="events/s",
            target="≥ 50,000 events/s",
            met=value >= TARGET,
            baseline=baseline,
            baseline_label="raw SELECT of the same rows, server-side cursor",
            ratio=value / baseline,
            detail=f"{total:,} events, rebuild {seconds:.1f}s, raw SELECT {raw_seconds:.1f}s, "
            f"positions {sorted(set(positions.values()))}, load average {' → '.join(loads)}, "
            f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB",
        )
        return report([figure], smoke=args.smoke)


if __name__ == "__main__":
    sys.exit(main())
