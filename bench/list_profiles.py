"""Benchmark: the first page of a filtered, searched ``list_profiles`` at scale (target: under 50 ms).

Bulk-loads N synthetic profiles straight into the ``profiles`` read model (COPY on PostgreSQL, executemany on
SQLite; not through the event log), then times ``list_profiles(tags=[...], search="...")`` and prints p50/p99.
Exits non-zero when p99 misses the target.

    python bench/list_profiles.py --database postgresql://... --profiles 1000000
    python bench/list_profiles.py --smoke

Size PostgreSQL's ``shared_buffers`` so the table fits (2GB for 1,000,000 profiles): with 128MB the heap
reads of each query come from outside PostgreSQL's buffers and p99 roughly doubles (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Figure, percentile, report, scratch_database, summary_ms  # noqa: E402
from ledger.settings import Database  # noqa: E402
from projections.fields import details  # noqa: E402
from projections.profiles import PROFILES, PROJECTION  # noqa: E402
from projections.queries import ReadModel  # noqa: E402
from projections.schema import init_database  # noqa: E402

TARGET_MS = 50.0
TAGS = [f"tag-{number:02d}" for number in range(50)]
PRODUCTS = [f"product-{number}" for number in range(10)]


def vocabulary(rng: random.Random, size: int = 2000) -> list[str]:
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(3)))
    return sorted(words)


def synthetic_rows(count: int, seed: int = 7):
    rng = random.Random(seed)
    words = vocabulary(rng)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for number in range(count):
        name = f"{rng.choice(words).title()} {rng.choice(words)} {number}"
        description = " ".join(rng.choice(words) for _ in range(rng.randint(6, 16)))
        at = start + timedelta(seconds=number)
        steering = {str(rng.randrange(16384)): round(rng.uniform(-2, 2), 3) for _ in range(rng.randint(1, 4))}
        identity = uuid.UUID(int=rng.getrandbits(128), version=4)
        tags, products = rng.sample(TAGS, rng.randint(1, 4)), rng.sample(PRODUCTS, rng.randint(0, 2))
        yield {
            "id": identity, "model_id": "gemma-2-2b", "sae_id": "res-16k", "layer": 12, "steering": steering,
            "feature_count": len(steering), "version": 1, "revision": 1, "created_at": at, "updated_at": at,
            "position": number + 1,  # and the columns the projection derives from the descriptive fields:
            **details({"name": name, "description": description, "tags": tags, "products": products, "metadata": {}},
                      searchable=True),
        }


def load(read_model: ReadModel, count: int) -> None:
    started = time.perf_counter()
    store = read_model.store
    with store.datastore.transaction(commit=True) as curs:
        curs.execute("DROP TABLE IF EXISTS profiles")
        curs.execute(store.ddl(PROFILES, "profiles")[0])  # the bare table
        store.load_rows(curs, PROFILES, "profiles", synthetic_rows(count))
    store.create_read_model_tables([PROJECTION])  # the indexes, built once the rows are in
    with store.datastore.transaction(commit=True) as curs:
        curs.execute("ANALYZE profiles")
    print(f"loaded {count:,} profiles in {time.perf_counter() - started:.1f}s", flush=True)


def measure(read_model: ReadModel, runs: int) -> tuple[list[float], int]:
    rng = random.Random(11)
    words = vocabulary(random.Random(7))
    timings, found = [], 0
    for run in range(runs):
        tags = rng.sample(TAGS, rng.randint(1, 2))
        search = rng.choice(words) if run % 3 else rng.choice(words)[:4]
        started = time.perf_counter()
        page = read_model.list_profiles(tags=tags, search=search, limit=50)
        timings.append((time.perf_counter() - started) * 1000)
        found += len(page.items)
    return timings, found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--profiles", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--smoke", action="store_true", help="tiny run: 500 profiles, 30 queries")
    parser.add_argument("--skip-load", action="store_true", help="measure the rows already loaded")
    args = parser.parse_args(argv)
    if args.smoke:
        args.profiles, args.runs = 500, 30
    with scratch_database(args.database) as url:
        init_database(Database(url))
        with contextlib.closing(ReadModel(Database(url))) as read_model:
            if not args.skip_load:
                load(read_model, args.profiles)
            measure(read_model, 20)  # warm up
            timings, found = measure(read_model, args.runs)
        settings = ""
        if url.startswith("postgres"):
            import psycopg

            with psycopg.connect(url) as conn:
                settings = f", shared_buffers={conn.execute('SHOW shared_buffers').fetchone()[0]}"
    p99 = percentile(timings, 0.99)  # the same p99 as the detail's
    figure = Figure(
        name=f"GET /api/profiles query, tag filter + search, first page over {args.profiles:,} profiles",
        value=p99, unit="ms", target=f"p99 < {TARGET_MS:.0f} ms", met=p99 < TARGET_MS,
        detail=f"{summary_ms(timings)}; {found / args.runs:.1f} rows/page; {url.split(':')[0]}{settings}",
    )
    return report([figure], smoke=args.smoke)


if __name__ == "__main__":
    sys.exit(main())
