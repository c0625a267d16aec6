"""bench/rebuild.py runs end to end on a few thousand events against a real PostgreSQL. Speed is not judged here."""

from __future__ import annotations

import subprocess
import sys

from tests.bench.test_bench_smoke import ROOT, run


def test_rebuild_benchmark_smoke(postgres_url):
    out = run("bench/rebuild.py", "--database", postgres_url, "--smoke")
    assert "rebuild of all projections" in out and "events/s" in out and "ratio" in out
    # The replicated log is one the ledger could have written: it verifies (signatures and signed heads).
    verified = subprocess.run([sys.executable, "-m", "ledger", "--database", postgres_url, "verify"], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stderr
