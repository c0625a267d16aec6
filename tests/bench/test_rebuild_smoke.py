"""bench/rebuild.py runs end to end on a few thousand events against a real PostgreSQL. Speed is not judged here."""

from __future__ import annotations

from tests.bench.test_bench_smoke import run


def test_rebuild_benchmark_smoke(postgres_url):
    out = run("bench/rebuild.py", "--database", postgres_url, "--smoke")
    assert "rebuild of all projections" in out and "events/s" in out and "ratio" in out
