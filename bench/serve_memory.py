"""Benchmark: the memory of ``ledger serve`` over a large read model (target: RSS < 500 MB with 1,000,000 profiles).

Bulk-loads N synthetic profiles into the ``profiles`` read model (``bench/list_profiles.py``'s ``load()``; skipped
when the table already holds N rows, so this can follow the list benchmark), records a few real profiles through
the ledger (one active, one with several versions), starts ``ledger serve --no-model --no-auth`` on the database,
exercises the read routes (listings with tag, product and search filters and their next pages, profiles by id and
by name, the active profile, versions, executions, events) from a few client threads, and reads the resident set
size of the server process and its children: after start-up, and the peak sampled while the routes ran.

    python bench/serve_memory.py --database postgresql://... --profiles 1000000
    python bench/serve_memory.py --smoke           # SQLite, 2,000 profiles, a few seconds
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Figure, Server, report, scratch_database  # noqa: E402
from bench.list_profiles import PRODUCTS, TAGS, load, vocabulary  # noqa: E402
from ledger.settings import Database  # noqa: E402
from projections.queries import ReadModel  # noqa: E402
from projections.schema import init_database  # noqa: E402

TARGET_MB = 500.0
CLIENTS = 4
MB = 1024 * 1024


def ensure_profiles(url: str, count: int) -> int:
    """Load ``count`` synthetic profiles unless the read model holds that many already; returns how many it holds."""
    init_database(Database(url))
    with contextlib.closing(ReadModel(Database(url))) as read_model:
        with read_model.store.datastore.transaction(commit=False) as curs:
            curs.execute("SELECT COUNT(*) AS n FROM profiles")
            held = int(curs.fetchone()["n"])
        if held < count:
            load(read_model, count)
            return count
        print(f"the read model already holds {held:,} profiles: not loading", flush=True)
        return held


def record_real_profiles(url: str) -> None:
    """A few profiles recorded as events: one active, one revised several times (versions to list)."""
    from ledger.application import ProfileLedger

    with ProfileLedger(env=Database(url).eventsourcing_env()) as ledger:
        if ledger.active_slot() is not None:
            return
        created = ledger.create_profile({"name": "memory bench active", "steering": {"12": 1.5}, "tags": ["tag-01"]})
        assert created.profile is not None
        for revision in range(2, 6):
            ledger.update_profile(created.profile.id, {"steering": {"12": float(revision)}})
        ledger.activate_profile(created.profile.id)


def rss_bytes(pid: int) -> int:
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total


def exercise(base: str, stop: threading.Event, seed: int, counts: dict[str, int], errors: list[str]) -> None:
    rng = random.Random(seed)
    words = vocabulary(random.Random(7))
    with httpx.Client(base_url=base, timeout=30) as client:

        def get(path: str, **params: object) -> dict:
            answer = client.get(path, params={k: v for k, v in params.items() if v is not None})
            counts["requests"] += 1
            if answer.status_code not in (200, 404):
                errors.append(f"{path} {params}: {answer.status_code} {answer.text[:200]}")
                return {}
            return answer.json() if answer.status_code == 200 else {}

        while not stop.is_set():
            listing = {
                "tag": rng.choice([None, *TAGS]),
                "product": rng.choice([None, None, *PRODUCTS]),
                "search": rng.choice([None, rng.choice(words), rng.choice(words)[:4]]),
                "sort": rng.choice(["name", "updated"]),
                "limit": rng.choice([20, 50, 200, 500]),
            }
            page = get("/api/profiles", **listing)
            cursor = page.get("next_cursor")
            for _ in range(rng.randint(0, 3)):  # the next pages of the same listing
                if not cursor:
                    break
                cursor = get("/api/profiles", **listing, cursor=cursor).get("next_cursor")
            listed = page.get("profiles") or []
            if listed:
                chosen = rng.choice(listed)
                get(f"/api/profiles/{chosen['id']}")
                get(f"/api/profiles/by-name/{chosen['name']}")
                get(f"/api/profiles/{chosen['id']}/versions")
            active = get("/api/profiles/active")
            if active:
                get(f"/api/profiles/{active['id']}/versions")
                get(f"/api/profiles/{active['id']}/executions")
            get("/api/events", limit=50)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the routes are exercised")
    parser.add_argument("--smoke", action="store_true", help="2,000 profiles, 3 seconds: checks only that it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.profiles, args.seconds = 2_000, 3.0
    with scratch_database(args.database) as url:
        return measure(args, url)


def measure(args: argparse.Namespace, url: str) -> int:
    held = ensure_profiles(url, args.profiles)
    record_real_profiles(url)

    stop = threading.Event()
    counts = {"requests": 0}
    errors: list[str] = []
    with Server(["-m", "ledger", "serve", "--no-model", "--no-auth"], {"LEDGER_DATABASE_URL": url},
                "/api/profiles/active") as server:
        started_rss = rss_bytes(server.process.pid)
        clients = [
            threading.Thread(target=exercise, args=(server.url(""), stop, seed, counts, errors), daemon=True)
            for seed in range(CLIENTS)
        ]
        for client in clients:
            client.start()
        peak = started_rss
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            time.sleep(0.25)
            peak = max(peak, rss_bytes(server.process.pid))
        stop.set()
        for client in clients:
            client.join(60)
        peak = max(peak, rss_bytes(server.process.pid))
    requests = counts["requests"]
    database = "PostgreSQL" if url.startswith("postgres") else "SQLite"
    figure = Figure(
        name=f"memory of `ledger serve` with {held:,} profiles in the read model",
        value=peak / MB,
        unit="MB",
        target=f"RSS < {TARGET_MB:g} MB",
        met=peak / MB < TARGET_MB and not errors,
        detail=(
            f"peak RSS of the server and its children while {CLIENTS} clients ran {requests:,} read requests for "
            f"{args.seconds:g} s (lists with filters, search and next pages; by id, by name, active, versions, "
            f"executions, events); {started_rss / MB:.0f} MB after start-up; {held:,} profiles in the read model; "
            f"{database}; errors {len(errors)}"
        ),
    )
    for error in errors[:5]:
        print("error:", error, flush=True)
    return report([figure], smoke=args.smoke)


if __name__ == "__main__":
    sys.exit(main())
