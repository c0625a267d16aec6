"""``bench/active_endpoint.py`` runs end to end (1-second wrk rounds) on PostgreSQL. Speed is not judged here."""

from __future__ import annotations

import shutil

import pytest

from tests.bench.test_bench_smoke import run

pytestmark = pytest.mark.postgres


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk (the HTTP load generator) is not installed")
def test_active_endpoint_benchmark_smoke(postgres_url):
    out = run("bench/active_endpoint.py", "--smoke", "--database", postgres_url)
    assert "GET /api/profiles/active req/s" in out and "ratio" in out and "p99" in out
