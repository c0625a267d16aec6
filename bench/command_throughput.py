"""Benchmark: durable command throughput through REST on PostgreSQL, and projection lag under that load.

Figures measured against the same server in one run:

* **durable command throughput**: ``ledger serve --no-model --no-auth`` (projections running in-process) is
  driven by ``wrk`` with a create/update/activate mix from ``--clients`` connections for ``--seconds``; the
  baseline is ``pgbench`` committing one ~300-byte INSERT per transaction from the same number of clients
  (target: REST ≥ 0.5× pgbench). The commands are answered once every read model shows them
  (read-your-writes, the default: the read models are written in the transaction that records the events).
* **the cost of read-your-writes**: the same load against the service as it was before read-your-writes (a
  server started with ``LEDGER_INLINE_PROJECTIONS=off``, so only its asynchronous worker writes the read
  models, and ``Prefer: respond-async`` on every command: the answer as soon as the events are committed),
  a fresh server for each run, the two alternating for ``--rounds`` rounds (``--read-your-writes both``, the
  default): the median commands/s with it over the median without it (target ≥ 0.9×) and the median p50
  latencies of both.
* **projection lag**: meanwhile a probe issues one command every ~20 ms (with ``Prefer: respond-async``, so
  its answer does not wait for the read models), takes its log position from the ``X-Ledger-Position`` header
  and polls the read models' tracking positions until all have reached it; the lag runs from the command's
  answer (the commit precedes it) to visibility in every read model (target: p99 < 50 ms).

    python bench/command_throughput.py --database postgresql://postgres@127.0.0.1:5432/bench
    python bench/command_throughput.py --database postgresql://... --smoke

``LEDGER_GROUP_COMMIT=off`` in the environment turns the server's group commit off, to compare.

Measure a durable server (``fsync=on``, ``full_page_writes=on``): ``tests/postgres_server.py`` starts one with
``PostgresServer.start(fsync="on", full_page_writes="on")``. The database should be empty or a scratch one: the
run adds profiles to its log and a ``bench_pgbench_insert`` table (dropped afterwards).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from bench.harness import Figure, Server, percentile, report, require_tool, summary_ms  # noqa: E402
from ledger.settings import parse_switch  # noqa: E402
from projections.registry import PROJECTION_NAMES  # noqa: E402

TARGET_RATIO = 0.5
TARGET_LAG_MS = 50.0
PROBE_INTERVAL_S = 0.02
POLL_S = 0.002  # the probe polls the tracking positions this often: finer would take CPU from the server
SCRATCH_TABLE = "bench_pgbench_insert"
PAYLOAD_BYTES = 300
THROUGHPUT_NAME = "durable command throughput via REST (create/update/activate mix, 16 clients)"
LAG_NAME = "projection lag under that write load"
COST_NAME = "read-your-writes: commands/s with it / without it (Prefer: respond-async), same server"
TARGET_COST_RATIO = 0.9

# The wrk script: each thread creates profiles with unique names, remembers the ids it is answered with, and
# updates (60%) or activates (10%) ids it has seen; the rest are creates. ``done`` prints one JSON line.
WRK_SCRIPT = r"""
local counter = 0
local ids = {}
local thread_tag = nil
local threads = {}

function setup(thread)
   thread:set("tag", tostring(#threads + 1))
   table.insert(threads, thread)
end

local headers = {["Content-Type"] = "application/json"}

function init(args)
   thread_tag = tag .. "-" .. args[1]
   if args[2] == "async" then headers["Prefer"] = "respond-async" end
   math.randomseed(tonumber(tag) * 7919 + os.time())
   creates, updates, activates = 0, 0, 0
end

function request()
   counter = counter + 1
   local roll = math.random(100)
   if #ids > 0 and roll <= 60 then
      updates = updates + 1
      local id = ids[math.random(#ids)]
      local body = '{"description": "revision ' .. counter .. ' of a benchmark profile", "tags": ["bench"]}'
      return wrk.format("PUT", "/api/profiles/" .. id, headers, body)
   elseif #ids > 0 and roll <= 70 then
      activates = activates + 1
      local id = ids[math.random(#ids)]
      return wrk.format("POST", "/api/profiles/" .. id .. "/activate", headers, "{}")
   end
   creates = creates + 1
   local body = '{"name": "bench ' .. thread_tag .. ' ' .. counter .. '", "description": "a benchmark profile",'
      .. ' "steering": {"12": 1.5, "407": -0.75}, "tags": ["bench"]}'
   return wrk.format("POST", "/api/profiles/", headers, body)
end

function response(status, headers, body)
   if status == 201 and #ids < 2000 then
      local id = string.match(body, '"id":"([0-9a-f%-]+)"')
      if id then table.insert(ids, id) end
   end
end

function done(summary, latency, requests)
   local c, u, a = 0, 0, 0
   for _, thread in ipairs(threads) do
      c = c + thread:get("creates")
      u = u + thread:get("updates")
      a = a + thread:get("activates")
   end
   local non2xx = summary.errors.status
   local failed = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
   io.write(string.format(
      'WRK_RESULT {"requests": %d, "non2xx": %d, "socket_errors": %d, "duration_us": %d, '
      .. '"p50_us": %d, "p99_us": %d, "creates": %d, "updates": %d, "activates": %d}\n',
      summary.requests, non2xx, failed, summary.duration, latency:percentile(50), latency:percentile(99), c, u, a))
end
"""


# -- the baseline ------------------------------------------------------------------------------------------
def pgbench_tps(url: str, clients: int, seconds: int) -> float:
    """Transactions/s of pgbench committing one ~300-byte INSERT each, ``clients`` at a time."""
    pgbench = require_tool("pgbench", "postgresql-client")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
        conn.execute(f"CREATE TABLE {SCRATCH_TABLE} (id bigserial PRIMARY KEY, payload text NOT NULL)")
    try:
        result = subprocess.run(  # the script on standard input ("-f -")
            [pgbench, "-n", "-f", "-", "-c", str(clients), "-j", str(min(2, clients)), "-T", str(seconds), url],
            input=f"INSERT INTO {SCRATCH_TABLE} (payload) VALUES (repeat('x', {PAYLOAD_BYTES}));\n",
            capture_output=True, text=True, timeout=seconds + 120,
        )
        found = re.search(r"tps = ([0-9.]+)", result.stdout)
        if result.returncode != 0 or not found:
            raise SystemExit(f"pgbench failed:\n{result.stdout}\n{result.stderr}")
        return float(found.group(1))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")


# -- the server --------------------------------------------------------------------------------------------
def ledger_server(url: str, *, worker: bool = False, inline: bool = True) -> Server:
    """``ledger serve --no-model --no-auth --no-access-log`` on a free loopback port; projections in-process, or
    in a ``ledger project`` worker process of their own (``worker=True``)."""
    return Server(
        ["-m", "ledger", "serve", "--no-model", "--no-auth", "--no-access-log",
         "--no-projections" if worker else "--projections", "--host", "127.0.0.1"],
        {"LEDGER_DATABASE_URL": url, "LEDGER_INLINE_PROJECTIONS": "on" if inline else "off"},
        "/health", beside=["-m", "ledger", "project"] if worker else None,
    )


def run_wrk(port: int, clients: int, seconds: int, *, respond_async: bool = False) -> dict[str, int]:
    wrk = require_tool("wrk", "wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        threads = min(2, clients)
        result = subprocess.run(
            [wrk, "-t", str(threads), "-c", str(clients), "-d", f"{seconds}s", "--timeout", "10s", "-s", script.name,
             f"http://127.0.0.1:{port}", "--", uuid.uuid4().hex[:8], "async" if respond_async else "wait"],
            capture_output=True, text=True, timeout=seconds + 60,
        )
    found = re.search(r"WRK_RESULT (\{.*\})", result.stdout)
    if result.returncode != 0 or not found:
        raise SystemExit(f"wrk failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(found.group(1))


# -- projection lag ----------------------------------------------------------------------------------------
class LagProbe(threading.Thread):
    """Every ~20 ms: one command, then poll the read models' tracking positions until they reach its position."""

    def __init__(self, server: Server, url: str, profile_id: str) -> None:
        super().__init__(name="lag-probe", daemon=True)
        self.server, self.url, self.profile_id = server, url, profile_id
        self.stop = threading.Event()
        self.lags_ms: list[float] = []
        self.failures = 0

    def run(self) -> None:
        names = list(PROJECTION_NAMES)
        http_conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        with psycopg.connect(self.url, autocommit=True) as db:
            number = 0
            while not self.stop.is_set():
                started = time.monotonic()
                number += 1
                http_conn.request(
                    "PUT", f"/api/profiles/{self.profile_id}",
                    json.dumps({"description": f"probe {number}"}),
                    {"Content-Type": "application/json", "Prefer": "respond-async"},
                )
                answer = http_conn.getresponse()
                answer.read()
                answered = time.perf_counter()
                if answer.status != 200:
                    self.failures += 1
                else:
                    position = int(answer.getheader("X-Ledger-Position"))
                    while not self.stop.is_set():
                        row = db.execute(
                            "SELECT count(*), min(notification_id) FROM projections_tracking"
                            " WHERE application_name = ANY(%s)", (names,),
                        ).fetchone()
                        if row[0] == len(names) and row[1] >= position:
                            self.lags_ms.append((time.perf_counter() - answered) * 1000)
                            break
                        time.sleep(POLL_S)
                self.stop.wait(max(0.0, PROBE_INTERVAL_S - (time.monotonic() - started)))
        http_conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", required=True, help="postgresql:// URL of a scratch database")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="a couple of seconds, 4 clients")
    parser.add_argument("--projection-worker", action="store_true",
                        help="keep the read models in a `ledger project` process instead of the server's")
    parser.add_argument("--rounds", type=int, default=2, help="alternating off/on runs with --read-your-writes both")
    parser.add_argument("--read-your-writes", choices=("both", "on", "off"), default="both",
                        help="load with commands that wait for the read models (on), with Prefer: respond-async "
                        "(off), or both, one after the other on the same server (the cost figure)")
    args = parser.parse_args(argv)
    if not args.database.startswith(("postgresql://", "postgres://")):
        parser.error("--database must be a postgresql:// URL")
    if args.smoke:
        args.clients, args.seconds, args.rounds = 4, 2, 1

    tps = pgbench_tps(args.database, args.clients, args.seconds)
    print(f"pgbench, 1 INSERT of {PAYLOAD_BYTES} bytes per transaction, {args.clients} clients, {args.seconds}s:"
          f" {tps:,.0f} tx/s", flush=True)

    modes = ("off", "on") if args.read_your_writes == "both" else (args.read_your_writes,)
    rounds: dict[str, list[dict[str, int]]] = {mode: [] for mode in modes}
    lags_ms: list[float] = []
    probe_failures = 0
    for _ in range(args.rounds if len(modes) == 2 else 1):
        for mode in modes:
            # "off" is the service as it was before read-your-writes: the read models written only by the
            # asynchronous worker, commands answered at their commit (Prefer: respond-async). "on" is the default.
            with ledger_server(args.database, worker=args.projection_worker, inline=mode == "on") as server:
                answer = httpx.post(server.url("/api/profiles/"), timeout=30,
                                    json={"name": f"lag probe {uuid.uuid4().hex[:8]}", "steering": {"1": 1.0}})
                if answer.status_code != 201:
                    raise SystemExit(
                        f"creating the probe's profile failed: {answer.status_code} {answer.content[:500]!r}"
                    )
                measure_lag = mode == "on" or len(modes) == 1
                probe = LagProbe(server, args.database, answer.json()["id"]) if measure_lag else None
                if probe is not None:
                    probe.start()
                    time.sleep(0.5)  # a few unloaded probes first would flatter the lag: drop them
                    probe.lags_ms.clear()
                rounds[mode].append(run_wrk(server.port, args.clients, args.seconds, respond_async=mode == "off"))
                if probe is not None:
                    probe.stop.set()
                    probe.join(timeout=30)
                    lags_ms += probe.lags_ms
                    probe_failures += probe.failures

    def rate_of(run: dict[str, int]) -> float:
        return (run["requests"] - run["non2xx"]) / (run["duration_us"] / 1e6)

    for mode, run in ((mode, run) for mode, runs_of in rounds.items() for run in runs_of):
        print(
            f"wrk, read-your-writes {mode}: {run['requests']:,} requests in {run['duration_us'] / 1e6:.1f}s "
            f"({run['non2xx']} not 2xx, {run['socket_errors']} socket errors), {rate_of(run):,.0f} commands/s, "
            f"latency p50 {run['p50_us'] / 1000:.1f} ms, p99 {run['p99_us'] / 1000:.1f} ms", flush=True,
        )
    runs = {mode: min(runs_of, key=lambda run: abs(rate_of(run) - statistics.median(map(rate_of, runs_of))))
            for mode, runs_of in rounds.items()}  # the run of median throughput of each mode
    rates = {mode: rate_of(run) for mode, run in runs.items()}
    mode = "on" if "on" in runs else "off"
    measured, rate = runs[mode], rates[mode]
    ratio = rate / tps if tps else 0.0
    lags = lags_ms or [float("inf")]
    group_commit = "on" if parse_switch(os.environ.get("LEDGER_GROUP_COMMIT"), default=True) else "off"
    figures = [
        Figure(
            name=THROUGHPUT_NAME,
            value=rate,
            unit="commands/s",
            target=f"≥ {TARGET_RATIO}×",
            met=ratio >= TARGET_RATIO and measured["non2xx"] == 0,
            baseline=tps,
            baseline_label="pgbench, 1 INSERT of ~300 bytes per transaction, same clients, same server",
            ratio=ratio,
            detail=(
                f"{args.clients} clients, {args.seconds}s, read-your-writes {mode}, group commit {group_commit}, "
                "projections "
                f"{'in a worker process' if args.projection_worker else 'in the server process'}; "
                f"mix sent: {measured['creates']} creates, {measured['updates']} updates, "
                f"{measured['activates']} activates; {measured['non2xx']} not 2xx; "
                f"latency p50 {measured['p50_us'] / 1000:.1f} ms, p99 {measured['p99_us'] / 1000:.1f} ms"
            ),
        ),
        Figure(
            name=LAG_NAME,
            value=percentile(lags, 0.99),
            unit="ms",
            target=f"p99 < {TARGET_LAG_MS:.0f} ms",
            met=bool(lags_ms) and percentile(lags, 0.99) < TARGET_LAG_MS,
            detail=(
                f"answer → all {len(PROJECTION_NAMES)} read models; {summary_ms(lags)}"
                + (f"; {probe_failures} probe commands failed" if probe_failures else "")
                + (f"; mean {statistics.fmean(lags):.2f} ms" if lags_ms else "")
            ),
        ),
    ]
    if len(runs) == 2:
        on, off = runs["on"], runs["off"]
        cost = rates["on"] / rates["off"] if rates["off"] else 0.0
        figures.append(Figure(
            name=COST_NAME,
            value=cost,
            unit="×",
            target=f"≥ {TARGET_COST_RATIO}×",
            met=cost >= TARGET_COST_RATIO and on["non2xx"] == off["non2xx"] == 0,
            detail=(
                f"with: {rates['on']:,.0f} commands/s, p50 {on['p50_us'] / 1000:.1f} ms, p99 {on['p99_us'] / 1000:.1f}"
                f" ms; without: {rates['off']:,.0f} commands/s, p50 {off['p50_us'] / 1000:.1f} ms, p99 "
                f"{off['p99_us'] / 1000:.1f} ms; p50 cost {(on['p50_us'] - off['p50_us']) / 1000:+.1f} ms; "
                f"{args.clients} clients, {args.seconds}s each, {args.rounds} alternating rounds of each (without "
                "first), the run of median throughput of each"
            ),
        ))
    return report(figures, smoke=args.smoke)


if __name__ == "__main__":
    sys.exit(main())
