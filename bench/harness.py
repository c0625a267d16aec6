"""What the benchmarks share: the servers and tools they run, and how they report.

Every benchmark reports one :class:`Figure` per row of BENCHMARKS.md, printed and (for the suite runner)
appended as a JSON line to the file named by ``$BENCH_RESULTS``. A script ends with
``sys.exit(report(figures, smoke=args.smoke))``: exit status 1 when a target was missed (0 in a smoke run, which
checks only that the script still runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "smollm2-135m-instruct"
START_TIMEOUT = 60.0


def require_tool(name: str, package: str) -> str:
    """The path of a command the benchmark runs (wrk, pgbench), installing its Debian package when it can."""
    found = shutil.which(name)
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"{name} not found: installing the Debian package {package}", file=sys.stderr, flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", package], check=False, capture_output=True)
        found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} is needed (Debian package {package}: apt-get install -y {package})")
    return found


class Server(contextlib.AbstractContextManager):
    """A Python server subprocess (``python ARGS --port N``) on a free loopback port, and any process started
    beside it (a projection worker, say) that lives and stops with it. Constructed once the server answers
    ``ready`` (a path) with 200; stopped at the end of a ``with`` block. Their output goes to a log of their own."""

    def __init__(self, args: list[str], env: dict[str, str], ready: str, *, beside: list[str] | None = None) -> None:
        with socket.socket() as sock:  # a free port
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.logs = tempfile.TemporaryDirectory(prefix="bench-server-")
        self.log = Path(self.logs.name) / "server.log"
        self.process = self._start([*args, "--port", str(self.port)], env)
        self.others = [self._start(beside, env)] if beside else []
        try:
            self._wait_until_answering(ready)
        except BaseException:
            self.stop()
            raise

    def _start(self, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1", **env})

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _wait_until_answering(self, path: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while self.process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url(path), timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        problem = "exited" if self.process.poll() is not None else "did not answer in time"
        raise RuntimeError(f"the server {problem}:\n{self.log.read_text(errors='replace')[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for process in (*self.others, self.process):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.logs.cleanup()


@contextlib.contextmanager
def scratch_database(url: str | None, *, postgres: bool = False, **settings: str) -> Iterator[str]:
    """``url`` when given; else a database for this run alone, gone when the block ends: an SQLite file in a
    temporary directory or, with ``postgres``, a database on a throwaway PostgreSQL server started with ``settings``."""
    if url:
        yield url
    elif postgres:
        from tests.postgres_server import PostgresServer

        server = PostgresServer.start(**settings)
        try:
            yield server.create_database(f"bench_{uuid.uuid4().hex[:8]}")
        finally:
            server.stop()
    else:
        with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
            yield f"sqlite:///{scratch}/bench.sqlite"


@dataclass(frozen=True)
class Figure:
    """One measured figure, its same-run baseline where the target is a ratio, and the verdict."""

    name: str  # the row, as BENCHMARKS.md names it
    value: float
    unit: str  # "req/s", "ms", "events/s", "×" …
    target: str  # as the row states it, e.g. "≥ 0.5×" or "p99 < 50 ms"
    met: bool
    baseline: float | None = None
    baseline_label: str | None = None  # what the baseline is, e.g. "pgbench, 1 INSERT per transaction"
    ratio: float | None = None
    detail: str = ""  # p50/p99, sizes, settings: whatever a reader needs to trust the figure
    device: str = "cpu"

    def line(self, *, judged: bool = True) -> str:
        figure = f"{self.value:,.2f} {self.unit}"
        if self.baseline is not None:
            figure += f" vs {self.baseline:,.2f} {self.unit} ({self.baseline_label})"
        if self.ratio is not None:
            figure += f", ratio {self.ratio:.3f}"
        verdict = ("met" if self.met else "MISSED") if judged else "not judged"
        extra = f" [{self.detail}]" if self.detail else ""
        return f"{self.name}: {figure} → target {self.target}: {verdict}{extra}"


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))]


def timed_ms(call: Callable[[Any], object], arguments: Iterable[Any]) -> list[float]:
    """Milliseconds of ``call(argument)`` for each argument in turn."""
    samples = []
    for argument in arguments:
        started = time.perf_counter()
        call(argument)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def summary_ms(samples_ms: list[float]) -> str:
    return (
        f"n={len(samples_ms)}, p50 {statistics.median(samples_ms):.2f} ms, p99 {percentile(samples_ms, 0.99):.2f} ms,"
        f" max {max(samples_ms):.2f} ms"
    )


def report(figures: list[Figure], *, smoke: bool = False) -> int:
    """Print each figure, hand it to the suite runner, and return the exit status."""
    results = os.environ.get("BENCH_RESULTS")
    for figure in figures:
        print(f"smoke run (sizes cut, the sizes it ran are in brackets): {figure.line(judged=False)}" if smoke
              else figure.line(), flush=True)
        if results and not smoke:
            with open(results, "a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(figure)) + "\n")
    return 0 if smoke or all(figure.met for figure in figures) else 1
