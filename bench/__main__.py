"""Run the whole benchmark suite and write its results into BENCHMARKS.md.

    python -m bench                      # every benchmark at full size (about 35 minutes on 2 cores)
    python -m bench --only rebuild time_travel   # some of them (the results block then holds only these)
    python -m bench --smoke              # tiny sizes: checks the scripts run; BENCHMARKS.md is left alone

Starts its own PostgreSQL (durable settings: fsync and synchronous commit on, as a production server would
run; the PostgreSQL 15 binaries must be installed), gives each benchmark a fresh database, collects the
figures each script reports (see ``bench/harness.py``) and replaces the results block of BENCHMARKS.md with
them, stamped with the date and the machine. Exits 1 when a target is missed, 2 when a benchmark failed to run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import DEFAULT_MODEL  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402

BEGIN_MARKER = "<!-- bench:results:begin -->"
END_MARKER = "<!-- bench:results:end -->"
SCRIPT_TIMEOUT_S = 1800
DURABLE_SETTINGS = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}


@dataclass(frozen=True)
class Bench:
    name: str  # its script is bench/<name>.py
    database: str | None  # the key of the database it is given (a key names one database), or None: none
    full: Callable[[argparse.Namespace], list[str]] = lambda _: []  # its arguments at full size
    smoke: tuple[str, ...] = ("--smoke",)  # its arguments in a smoke run

    def args(self, options: argparse.Namespace, database: Callable[[str], str]) -> list[str]:
        given = ["--database", database(self.database)] if self.database else []
        return [*given, *(self.smoke if options.smoke else self.full(options))]


BENCHES = [
    Bench("command_throughput", "commands", lambda o: ["--seconds", str(o.seconds)]),
    Bench("active_endpoint", "active", lambda o: ["--seconds", str(o.seconds)]),
    Bench("list_profiles", "profiles", lambda o: ["--profiles", str(o.profiles)]),
    Bench("serve_memory", "profiles",  # the same database: the million profiles are loaded once
          lambda o: ["--profiles", str(o.profiles)]),
    Bench("rebuild", "rebuild", lambda o: ["--events", str(o.events)]),
    Bench("time_travel", "time_travel"),
    Bench("steering_generation", None, lambda _: ["--model", str(DEFAULT_MODEL)],
          smoke=("--tiny", "--smoke", "--repeats", "2", "--max-tokens", "8")),
    Bench("serving", None, lambda _: ["--model", str(DEFAULT_MODEL)]),
    Bench("steering_activation", "activation"),
    Bench("chain_overhead", "chain"),
    Bench("idle_connections", "idle"),
    Bench("console_pages", "console"),
]


def machine_facts(admin_url: str) -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 2**20:.0f} GiB RAM"
    with psycopg.connect(admin_url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = ", ".join(
            f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}"
            for name in ("fsync", "synchronous_commit", "shared_buffers")
        )
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (steering figures are CPU figures)"
    return {
        "machine": f"{os.cpu_count()} vCPU ({cpu}), {memory}",
        "postgres": f"PostgreSQL {version} ({settings})",
        "python": f"Python {platform.python_version()}, torch {torch.__version__}",
        "device": device,
    }


def ensure_model(options: argparse.Namespace) -> None:
    wanted = options.only or [bench.name for bench in BENCHES]
    if not options.smoke and {"steering_generation", "serving"} & set(wanted) and not (DEFAULT_MODEL / "config.json").exists():
        print(f"fetching the default model into {DEFAULT_MODEL.parent}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "ledger", "models", "fetch", "--models-dir", str(DEFAULT_MODEL.parent)], check=True
        )


def run_bench(bench: Bench, argv: list[str], results: Path) -> tuple[int, float]:
    command = [sys.executable, str(ROOT / "bench" / f"{bench.name}.py"), *argv]
    print(f"\n=== {bench.name}: {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    with subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, "BENCH_RESULTS": str(results)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
    ) as process:
        assert process.stdout is not None
        watchdog = threading.Timer(SCRIPT_TIMEOUT_S, process.kill)  # a script that hangs without a word is stopped too
        watchdog.start()
        try:
            for line in process.stdout:
                print(f"  {line}", end="", flush=True)
        finally:
            watchdog.cancel()
        status = process.wait()
    if status < 0 and time.monotonic() - started >= SCRIPT_TIMEOUT_S:
        print(f"  killed after {SCRIPT_TIMEOUT_S:g} s", flush=True)
    return status, time.monotonic() - started


def cell(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{text} {unit}".strip()


def results_block(facts: dict[str, str], started: datetime, figures: list[dict], failures: list[str],
                  load: tuple[str, str], duration_s: float) -> str:
    lines = [
        BEGIN_MARKER,
        f"Run of `python -m bench` on {started:%Y-%m-%d %H:%M} UTC, {duration_s / 60:.0f} min. "
        f"{facts['machine']}; load average {load[0]} at the start, {load[1]} at the end. {facts['postgres']}. "
        f"{facts['python']}. GPU: {facts['device']}.",
        "",
        "| figure | result | baseline (same run) | ratio | target | status | details |",
        "|---|---|---|---|---|---|---|",
    ]
    for figure in figures:
        baseline = "—" if figure["baseline"] is None else f"{cell(figure['baseline'], figure['unit'])} ({figure['baseline_label']})"
        ratio = "—" if figure["ratio"] is None else f"{figure['ratio']:.3f}×"
        details = figure["detail"] + ("" if figure["device"] == "cpu" else f"; device {figure['device']}")
        lines.append(
            f"| {figure['name']} | {cell(figure['value'], figure['unit'])} | {baseline} | {ratio} | {figure['target']} "
            f"| {'met' if figure['met'] else '**missed**'} | {details} |"
        )
    lines += [f"| {failure} | — | — | — | — | **did not run** | see the run's output |" for failure in failures]
    lines.append(END_MARKER)
    return "\n".join(lines)


def write_results(path: Path, block: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    if BEGIN_MARKER in text and END_MARKER in text:
        head, rest = text.split(BEGIN_MARKER, 1)
        text = head + block + rest.split(END_MARKER, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; judge nothing, write nothing")
    parser.add_argument("--only", nargs="+", choices=[bench.name for bench in BENCHES], help="run only these")
    parser.add_argument("--seconds", type=int, default=10, help="duration of each load run")
    parser.add_argument("--profiles", type=int, default=1_000_000, help="read-model size for list and memory")
    parser.add_argument("--events", type=int, default=1_000_000, help="log size for the rebuild")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    options = parser.parse_args(argv)

    ensure_model(options)
    started = datetime.now(UTC)
    clock = time.monotonic()
    load_before = f"{os.getloadavg()[0]:.1f}"
    server = PostgresServer.start(
        **DURABLE_SETTINGS, shared_buffers="128MB" if options.smoke else "2GB", max_connections="300"
    )

    @functools.cache  # a key names one database: benches that share a key share it
    def database(key: str) -> str:
        return server.create_database(f"bench_{key}_{uuid.uuid4().hex[:8]}")

    failures: list[str] = []
    figures: list[dict] = []
    try:
        facts = machine_facts(server.admin_url)
        with tempfile.TemporaryDirectory() as scratch:
            for bench in BENCHES:
                if options.only and bench.name not in options.only:
                    continue
                results = Path(scratch) / f"{bench.name}.jsonl"
                status, seconds = run_bench(bench, bench.args(options, database), results)
                reported = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
                figures += reported
                print(f"=== {bench.name}: exit {status} after {seconds:.0f} s", flush=True)
                if status not in (0, 1) or (not reported and not options.smoke):
                    failures.append(f"{bench.name} (exit {status})")
    finally:
        server.stop()
    duration = time.monotonic() - clock
    print("\n" + "\n".join(f"{'met   ' if f['met'] else 'MISSED'} {f['name']}" for f in figures))
    for failure in failures:
        print(f"FAILED {failure}")
    if not options.smoke:
        block = results_block(facts, started, figures, failures, (load_before, f"{os.getloadavg()[0]:.1f}"), duration)
        write_results(options.output, block)
        print(f"results written to {options.output}")
    if failures:
        return 2
    return 0 if options.smoke or all(figure["met"] for figure in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
