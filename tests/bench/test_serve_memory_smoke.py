"""``bench/serve_memory.py`` runs end to end at a tiny size on PostgreSQL. Memory is not judged here."""

from __future__ import annotations

import pytest

from tests.bench.test_bench_smoke import run

pytestmark = pytest.mark.postgres


def test_serve_memory_benchmark_smoke(postgres_url):
    out = run("bench/serve_memory.py", "--smoke", "--database", postgres_url)
    assert "memory of `ledger serve`" in out and "MB" in out and "errors 0" in out
