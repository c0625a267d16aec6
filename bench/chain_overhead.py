"""Benchmark: what the tamper-evident chain costs concurrent writers on PostgreSQL.

    python bench/chain_overhead.py --database postgresql://…  [--threads 16] [--seconds 10]

Runs the same workload (each thread creates profiles, one command = one atomic save of a profile and its
name index) against the library's plain PostgreSQL recorder and against the chained one, in fresh schemas of
the same database, interleaved, and prints commands/s and the ratio (group commit off: the library's recorder
has none, so the ratio is the chain's cost alone). Exits 1 when the chained store is below
0.8× the plain one.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid

from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import Figure, report  # noqa: E402
from ledger import recorders  # noqa: E402
from ledger.application import ProfileLedger  # noqa: E402
from ledger.settings import Database  # noqa: E402

TARGET_RATIO = 0.8


def throughput(env: dict[str, str], threads: int, seconds: float) -> float:
    app = ProfileLedger(env=env)
    done = [0] * threads
    stop = time.perf_counter() + seconds

    def work(index: int) -> None:
        while time.perf_counter() < stop:
            app.create_profile({"name": f"w{index}-{uuid.uuid4().hex}", "steering": {1: 1.0}})
            done[index] += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    rate = sum(done) / (time.perf_counter() - started)
    app.close()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True, help="A PostgreSQL URL.")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="one short round, judge nothing")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.seconds, args.threads = 1, 1.0, 4
    database = Database(args.database)
    recorders.GROUP_COMMIT = False  # the library's recorder has none: compare the chain alone
    rates: dict[str, list[float]] = {"plain": [], "chained": []}
    for round_number in range(args.rounds):
        for kind in ("plain", "chained"):
            schema = f"bench_{kind}_{round_number}_{uuid.uuid4().hex[:6]}"
            with psycopg.connect(args.database, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            env = {**database.eventsourcing_env(pool_size=args.threads), "POSTGRES_SCHEMA": schema}
            if kind == "plain":  # the library's own factory and recorder
                env.pop("APPLICATION_RECORDER_TOPIC")
                env["PERSISTENCE_MODULE"] = "eventsourcing.postgres"
            rates[kind].append(throughput(env, args.threads, args.seconds))
    plain, chained = max(rates["plain"]), max(rates["chained"])
    figure = Figure(
        name=f"tamper-evident chain: creates/s through the application, {args.threads} threads",
        value=chained, unit="creates/s", target=f"≥ {TARGET_RATIO}×", met=chained / plain >= TARGET_RATIO,
        baseline=plain, baseline_label="the library's plain recorder", ratio=chained / plain,
        detail=f"best of {args.rounds} interleaved {args.seconds:.0f} s rounds; group commit off in both",
    )
    return report([figure], smoke=args.smoke)


if __name__ == "__main__":
    sys.exit(main())
