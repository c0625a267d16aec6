"""``bench/idle_connections.py`` runs end to end (100 idle connections for 3 s, twice). Speed is not judged here."""

from __future__ import annotations

from tests.bench.test_bench_smoke import run


def test_idle_connections_benchmark_smoke():
    out = run("bench/idle_connections.py", "--smoke")
    assert out.count("GET /health slowest probe") == 2 and "p99" in out and "0 errors" in out
