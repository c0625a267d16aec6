"""``bench/serving.py`` runs end to end on a tiny random model (server, streamed clients, baselines). Speed is not
judged here."""

from __future__ import annotations

from tests.bench.test_bench_smoke import run


def test_serving_benchmark_smoke():
    out = run("bench/serving.py", "--smoke")
    assert "concurrent clients" in out and "one after another" in out and "generate()" in out
    assert "time to first token, arriving while 7 decode" in out and "TTFT p50" in out and "inter-token p99" in out
