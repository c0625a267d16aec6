"""The console pages benchmark runs end to end at a tiny size (speed is judged by ``python -m bench``, not here)."""

from __future__ import annotations

from tests.bench.test_bench_smoke import run


def test_console_pages_benchmark_smoke(postgres_url):
    out = run("bench/console_pages.py", "--database", postgres_url, "--smoke")
    assert "console pages, slowest p99" in out and "/events/verify" in out
