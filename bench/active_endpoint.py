"""Benchmark: ``GET /api/profiles/active`` under load against a trivial Litestar endpoint (target: ≥ 0.8×, p99 < 5 ms).

Starts two servers on free loopback ports, one at a time, under the same ASGI server and process settings (both go
through ``ledger.api.server.serve_app``): the baseline, a Litestar app with one GET route answering a small msgspec
Struct, and ``ledger serve --no-model --no-auth --no-access-log`` over a database with an active profile (neither
logs a line per request). ``wrk -c 64 -t 2 -d S --latency`` runs against each in turn (baseline, ledger, baseline,
ledger, …, the order alternating); each round is a pair, and the pair with the median ratio is the figure (a
shared machine's load drifts; a pair's two runs see nearly the same load).

    python bench/active_endpoint.py --database postgresql://... --seconds 10
    python bench/active_endpoint.py --smoke          # SQLite, 1-second rounds: checks only that it runs

wrk runs on the same machine as the server and takes CPU from it; the detail says how many cores there are. With 64
connections always in flight the mean latency is 64 / throughput (Little's law): a p99 under 5 ms needs well over
12,800 req/s from the server, which one Python process on a shared 2-core machine does not reach even for the
trivial endpoint.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import msgspec
from litestar import Litestar, get

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Figure, Server, report, require_tool, scratch_database  # noqa: E402

TARGET_RATIO = 0.8
TARGET_P99_MS = 5.0
CONNECTIONS = 64
ROUTE = "/api/profiles/active"


class Greeting(msgspec.Struct):
    id: str
    name: str
    version: int


@dataclass
class Round:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(output: str) -> Round:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (rate and p50 and p99):
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Round(float(rate.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), errors + int(non_2xx.group(1) if non_2xx else 0))


def run_wrk(wrk: str, url: str, seconds: int) -> Round:
    out = subprocess.run(
        [wrk, "-c", str(CONNECTIONS), "-t", "2", "-d", f"{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )
    return parse_wrk(out.stdout)


def record_active_profile(url: str) -> None:
    """A profile with a realistic spec, active (recorded through the application, as the API would)."""
    from ledger.application import ProfileLedger
    from ledger.settings import Database

    with ProfileLedger(env=Database(url).eventsourcing_env()) as ledger:
        if ledger.active_slot() is not None:
            return
        outcome = ledger.create_profile({
            "name": "bench active profile",
            "description": "the profile GET /api/profiles/active answers in the benchmark",
            "model_id": "gemma-2-2b", "sae_id": "res-16k", "layer": 12,
            "steering": {str(feature): 0.25 * (feature % 7) - 0.5 for feature in range(100, 4100, 250)},
            "tags": ["bench", "formal"], "products": ["assistant"], "metadata": {"owner": "bench"},
        })
        assert outcome.profile is not None
        ledger.activate_profile(outcome.profile.id)


def serve_trivial(port: int) -> None:
    """The baseline: one GET route answering a small msgspec Struct, nothing else."""
    from ledger.api.server import serve_app

    @get("/hello", sync_to_thread=False)
    def hello() -> Greeting:
        return Greeting(id="6f1c8a52-3f0e-4b8e-9a51-2d1f5f0c7b10", name="baseline", version=1)

    serve_app(Litestar(route_handlers=[hello]), "127.0.0.1", port, access_log=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk round")
    parser.add_argument("--rounds", type=int, default=5,
                        help="pairs of runs (baseline and ledger, order alternating); the median pair counts")
    parser.add_argument("--smoke", action="store_true", help="1-second rounds, one each: checks only that it runs")
    parser.add_argument("--serve-trivial", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_trivial:
        serve_trivial(args.port)
        return 0
    if args.smoke:
        args.seconds, args.rounds = 1, 1
    wrk = require_tool("wrk", "wrk")
    with scratch_database(args.database) as url:
        return compare(args, wrk, url)


def compare(args: argparse.Namespace, wrk: str, url: str) -> int:
    record_active_profile(url)

    env = {"LEDGER_DATABASE_URL": url}
    servers = {
        "baseline": (["bench/active_endpoint.py", "--serve-trivial"], "/hello"),
        "ledger": (["-m", "ledger", "serve", "--no-model", "--no-auth", "--no-access-log"], ROUTE),
    }
    pairs: list[dict[str, Round]] = []
    for number in range(args.rounds):
        pair: dict[str, Round] = {}
        for name in (list(servers) if number % 2 == 0 else list(reversed(servers))):
            command, path = servers[name]
            with Server(command, env, path) as server:
                run_wrk(wrk, server.url(path), 1)  # warm up
                measured = run_wrk(wrk, server.url(path), args.seconds)
            pair[name] = measured
            print(
                f"round {number + 1} {name}: {measured.requests_per_s:,.0f} req/s, p50 {measured.p50_ms:.2f} ms, "
                f"p99 {measured.p99_ms:.2f} ms, errors {measured.errors}",
                flush=True,
            )
        pairs.append(pair)
    def of(pair: dict[str, Round]) -> float:  # (a round where no request ended, on a machine too busy, is 0)
        return pair["ledger"].requests_per_s / pair["baseline"].requests_per_s if pair["baseline"].requests_per_s \
            else 0.0

    pairs.sort(key=of)
    base, ledger = pairs[len(pairs) // 2]["baseline"], pairs[len(pairs) // 2]["ledger"]
    spread = ", ".join(f"{of(pair):.2f}" for pair in pairs)
    ratio = of(pairs[len(pairs) // 2])
    database = "PostgreSQL" if url.startswith("postgres") else "SQLite"
    # Little's law: with 64 requests always in flight, the mean latency is 64 / throughput, whatever the route
    floor_ms = CONNECTIONS / ledger.requests_per_s * 1000 if ledger.requests_per_s else float("inf")
    figure = Figure(
        name="GET /api/profiles/active req/s (64 connections)",
        value=ledger.requests_per_s,
        unit="req/s",
        target=f"≥ {TARGET_RATIO}×, p99 < {TARGET_P99_MS:g} ms",
        met=ratio >= TARGET_RATIO and ledger.p99_ms < TARGET_P99_MS and ledger.errors == 0,
        baseline=base.requests_per_s,
        baseline_label="trivial Litestar endpoint, same server settings",
        ratio=ratio,
        detail=(
            f"p99 {ledger.p99_ms:.2f} ms (baseline {base.p99_ms:.2f} ms), p50 {ledger.p50_ms:.2f} ms "
            f"(baseline {base.p50_ms:.2f} ms), errors {ledger.errors}; wrk -c {CONNECTIONS} -t 2 -d {args.seconds}s, "
            f"median of {args.rounds} pairs (ratios {spread}); {database}; server and wrk share {os.cpu_count()} cores; "
            f"{CONNECTIONS} connections always in flight make the mean latency {floor_ms:.1f} ms at this rate (a p99 "
            f"under {TARGET_P99_MS:g} ms needs more than {CONNECTIONS / TARGET_P99_MS * 1000:,.0f} req/s)"
        ),
    )
    return report([figure], smoke=args.smoke)


if __name__ == "__main__":
    sys.exit(main())
