"""The time-travel benchmark runs end to end at a tiny size, so it never rots. Speed is not judged here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MISSED_TARGET = 1  # a benchmark's exit status when a figure misses its target: not a failure here


def test_time_travel_benchmark_smoke():
    result = subprocess.run(
        [sys.executable, "bench/time_travel.py", "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode in (0, MISSED_TARGET), result.stderr[-3000:]
    assert "time travel" in result.stdout and "p99" in result.stdout
