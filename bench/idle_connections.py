"""Benchmark (soak): ``/health`` latency while 1,000 idle connections are held open and normal traffic runs
(target: every probe under 100 ms for 30 s).

Starts ``ledger serve --no-model --no-auth --no-access-log`` on a free loopback port (SQLite by default) and, for
``--seconds``:

* holds ``--idle`` TCP connections that never send a byte, as an attacker would, twice: once with a header
  deadline (``LEDGER_HEADER_TIMEOUT``) longer than the soak, so the same connections stay open throughout
  ("held"), and once with the default 10 s, so the server closes each one and this script opens it again at once
  ("churn"): either way the server always faces the full number;
* runs normal traffic from one client: create a profile, list profiles, read a page of the audit log, in a loop;
* probes ``GET /health`` every 50 ms on a new connection (connect, request, read the whole answer) and times it,
  from a second after the idle connections are open and the traffic has begun; the idle connections and the
  traffic run in a process of their own, so that their work does not delay the probes' clock.

A third soak with no idle connection, same traffic and probes, is the same-run baseline. Each figure is the
slowest probe; the detail gives p50/p99, the idle connections held on average, how many the
server closed and were reopened, and the traffic's request count and errors.

    python bench/idle_connections.py --seconds 30 --idle 1000
    python bench/idle_connections.py --smoke      # 100 idle connections for 3 s: checks only that it runs
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import resource
import selectors
import socket
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Figure, Server, percentile, report, scratch_database  # noqa: E402

TARGET_MS = 100.0
PROBE_INTERVAL = 0.05
DEFAULT_HEADER_TIMEOUT = 10.0  # ledger.api.server.ConnectionLimits.header_timeout
WARM_UP = 1.0
"""Seconds of idle connections and traffic before the first probe (the traffic's first requests create tables)."""


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed + 1024), hard))


class IdleHerd:
    """``count`` connections that never send anything, reopened as soon as the server closes one."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.selector = selectors.DefaultSelector()
        self.reopened = 0
        self.held_samples: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="idle-herd", daemon=True)

    def _open(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ)

    def start(self) -> None:
        for _ in range(self.count):
            self._open()
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.selector.select(timeout=0.1):
                sock = key.fileobj
                try:
                    data = sock.recv(4096)  # type: ignore[union-attr]
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                if data == b"":
                    self.selector.unregister(sock)
                    sock.close()  # type: ignore[union-attr]
                    with contextlib.suppress(OSError):
                        self._open()
                        self.reopened += 1
            self.held_samples.append(len(self.selector.get_map()))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()


def probe(port: int) -> float:
    """Milliseconds for one ``GET /health`` on a new connection, from connect to the end of the answer."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    if not answer.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"/health answered {answer[:80]!r}")
    return (time.perf_counter() - started) * 1000


def traffic(base: str, stop: threading.Event, counts: dict[str, int]) -> None:
    run = uuid.uuid4().hex[:8]  # each soak's profiles get names of their own (the database may be shared)
    with httpx.Client(base_url=base, timeout=10) as http:
        number = 0
        while not stop.is_set():
            number += 1
            for method, path, body in (
                ("POST", "/api/profiles", {"name": f"soak-{run}-{number}", "steering": {"3": 0.5}, "tags": ["soak"]}),
                ("GET", "/api/profiles?limit=20", None),
                ("GET", "/api/events?limit=50", None),
            ):
                try:
                    answer = http.request(method, path, json=body)
                    counts["requests"] += 1
                    if answer.status_code >= 400:
                        counts["errors"] += 1
                except httpx.HTTPError:
                    counts["errors"] += 1
            stop.wait(0.05)


def attacker_and_clients(port: int, base: str, idle: int, seconds: float, results: multiprocessing.Queue) -> None:
    """The idle herd and the normal traffic, in a process of their own (their work must not delay the probes'
    clock in this one)."""
    raise_fd_limit(idle)
    herd = IdleHerd(port, idle)
    herd.start()
    stop, counts = threading.Event(), {"requests": 0, "errors": 0}
    load = threading.Thread(target=traffic, args=(base, stop, counts), daemon=True)
    load.start()
    results.put("ready")
    time.sleep(seconds + WARM_UP)
    stop.set()
    load.join(15)
    held = statistics.mean(herd.held_samples) if herd.held_samples else 0.0
    herd.close()
    results.put({"held": held, "reopened": herd.reopened, **counts})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--idle", type=int, default=1000, help="idle connections held open")
    parser.add_argument("--smoke", action="store_true", help="100 idle connections for 3 s: checks only that it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.idle = 3, 100
    raise_fd_limit(args.idle)
    figures = []
    with scratch_database(args.database) as url:
        # held: a header deadline past the soak, so the same idle connections stay open throughout;
        # churn: the default deadline, so the server closes them and the attacker opens them again
        # baseline: the same traffic and probes with no idle connection, in the same run (a shared machine drifts)
        baseline = soak(args, url, "baseline", DEFAULT_HEADER_TIMEOUT)
        for scenario, header_timeout in (("held", 2 * args.seconds + 10), ("churn", DEFAULT_HEADER_TIMEOUT)):
            figures.append(soak(args, url, scenario, header_timeout, baseline))
    return report(figures, smoke=args.smoke)


def soak(
    args: argparse.Namespace, url: str, scenario: str, header_timeout: float, baseline: Figure | None = None
) -> Figure:
    idle = 0 if scenario == "baseline" else args.idle
    with Server(
        ["-m", "ledger", "serve", "--no-model", "--no-auth", "--no-access-log"],
        {"LEDGER_DATABASE_URL": url, "LEDGER_HEADER_TIMEOUT": str(header_timeout)},
        "/health",
    ) as server:
        results: multiprocessing.Queue = multiprocessing.Queue()
        others = multiprocessing.Process(
            target=attacker_and_clients,
            args=(server.port, server.url(""), idle, args.seconds, results),
            daemon=True,
        )
        others.start()
        if results.get(timeout=60) != "ready":
            raise RuntimeError("the idle connections could not be opened")
        time.sleep(WARM_UP)
        samples: list[float] = []
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            samples.append(probe(server.port))
            time.sleep(PROBE_INTERVAL)
        outcome = results.get(timeout=60)
        others.join(10)
    worst = max(samples)
    database = "PostgreSQL" if url.startswith("postgres") else "SQLite"
    held = "held open throughout" if scenario == "held" else f"closed after {header_timeout:g} s and reopened"
    return Figure(
        name=f"GET /health slowest probe, {idle:,} idle connections ({held}) + traffic, {args.seconds} s",
        value=worst,
        unit="ms",
        target=f"every probe < {TARGET_MS:g} ms",
        met=worst < TARGET_MS and outcome["errors"] == 0 and outcome["held"] >= 0.9 * idle,
        baseline=baseline.value if baseline else None,
        baseline_label="the same traffic and probes, no idle connection" if baseline else None,
        ratio=worst / baseline.value if baseline else None,
        detail=(
            f"probes {len(samples)} on new connections: p50 {statistics.median(samples):.2f} ms, p99 "
            f"{percentile(samples, 0.99):.2f} ms, max {worst:.2f} ms; idle connections held on average "
            f"{outcome['held']:,.0f}, closed by the server's header deadline ({header_timeout:g} s) and reopened "
            f"{outcome['reopened']:,}; traffic {outcome['requests']:,} requests, {outcome['errors']} errors; "
            f"{database}; {os.cpu_count()} cores shared with the clients"
            + (f"; baseline: {baseline.detail.split(';')[0]}" if baseline else "")
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
