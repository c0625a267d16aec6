"""Benchmark: what the tamper-evident chain and the event signatures cost concurrent writers on PostgreSQL.

    python bench/chain_overhead.py --database postgresql://…  [--threads 16] [--seconds 10]

Runs the same workload (each thread creates profiles, one command = one atomic save of a profile and its
name index) three ways, in fresh schemas of the same database, interleaved: the library's plain PostgreSQL
recorder and mapper (``plain``), the chained recorder with the library's mapper (``chained``), and the chained
recorder with the signing mapper the ledger uses (``signed``: every event Ed25519-signed, and the head each
insert transaction leaves, see ``ledger/signing/``). Prints commands/s and two ratios: chained / plain (the
chain's cost alone; group commit off, the library's recorder has none) and signed / chained (the signatures'
cost alone). Exits 1 when the chain is below 0.8× or the signatures below 0.9×.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from pathlib import Path
from uuid import UUID

import psycopg
from eventsourcing.application import Application
from eventsourcing.persistence import EventStore, Mapper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Figure, report  # noqa: E402
from ledger import recorders  # noqa: E402
from ledger.application import ProfileLedger  # noqa: E402
from ledger.settings import Database  # noqa: E402

TARGET_RATIO = 0.8
SIGNING_TARGET_RATIO = 0.9


class UnsignedLedger(ProfileLedger):
    """The ledger with the library's own mapper, event store and snapshot store: nothing signed."""

    def construct_mapper(self) -> Mapper[UUID]:
        return Application.construct_mapper(self)

    def construct_event_store(self) -> EventStore[UUID]:
        return Application.construct_event_store(self)

    def construct_snapshot_store(self) -> EventStore[UUID]:
        return Application.construct_snapshot_store(self)


def throughput(env: dict[str, str], threads: int, seconds: float, *, signed: bool) -> float:
    app = (ProfileLedger if signed else UnsignedLedger)(env=env)
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
    rates: dict[str, list[float]] = {"plain": [], "chained": [], "signed": []}
    kinds = list(rates)
    for round_number in range(args.rounds):
        # Each round in another order: none of the three always runs first (or last) on a busy machine.
        for kind in kinds[round_number % 3:] + kinds[:round_number % 3]:
            schema = f"bench_{kind}_{round_number}_{uuid.uuid4().hex[:6]}"
            with psycopg.connect(args.database, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            env = {**database.eventsourcing_env(pool_size=args.threads), "POSTGRES_SCHEMA": schema}
            if kind == "plain":  # the library's own factory and recorder
                env.pop("APPLICATION_RECORDER_TOPIC")
                env["PERSISTENCE_MODULE"] = "eventsourcing.postgres"
            rates[kind].append(throughput(env, args.threads, args.seconds, signed=kind == "signed"))
    plain, chained, signed = max(rates["plain"]), max(rates["chained"]), max(rates["signed"])
    chain_figure = Figure(
        name=f"tamper-evident chain: creates/s through the application, {args.threads} threads",
        value=chained, unit="creates/s", target=f"≥ {TARGET_RATIO}×", met=chained / plain >= TARGET_RATIO,
        baseline=plain, baseline_label="the library's plain recorder", ratio=chained / plain,
        detail=f"best of {args.rounds} interleaved {args.seconds:.0f} s rounds; group commit off in both; "
               "neither signs",
    )
    signing_figure = Figure(
        name=f"signed events (Ed25519): creates/s through the application, {args.threads} threads",
        value=signed, unit="creates/s", target=f"≥ {SIGNING_TARGET_RATIO}×",
        met=signed / chained >= SIGNING_TARGET_RATIO,
        baseline=chained, baseline_label="the same chained store, unsigned", ratio=signed / chained,
        detail=f"best of {args.rounds} interleaved {args.seconds:.0f} s rounds; group commit off in both; "
               "two signatures per create: its 3 events, signed together, and the head its insert leaves",
    )
    return report([chain_figure, signing_figure], smoke=args.smoke)


if __name__ == "__main__":
    sys.exit(main())
