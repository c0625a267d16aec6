"""The suite runner: runs the scripts against its own PostgreSQL and writes the results block of BENCHMARKS.md."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench.__main__ import BEGIN_MARKER, END_MARKER, results_block, write_results

ROOT = Path(__file__).resolve().parents[2]
FACTS = {"machine": "2 vCPU", "postgres": "PostgreSQL 15", "python": "Python 3.11", "device": "none"}
FIGURE = {
    "name": "rebuild", "value": 61234.5, "unit": "events/s", "target": "≥ 50,000 events/s", "met": True,
    "baseline": 400000.0, "baseline_label": "raw SELECT", "ratio": 0.15, "detail": "1,000,000 events", "device": "cpu",
}


def test_the_results_block_replaces_the_previous_one_and_keeps_the_notes(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Benchmarks\n\nintro\n\n{BEGIN_MARKER}\nold figures\n{END_MARKER}\n\n## Notes\nkept\n")

    block = results_block(FACTS, datetime(2026, 1, 2, 3, 4, tzinfo=UTC), [FIGURE], ["time_travel (exit 2)"], ("1.0", "2.0"), 600)
    write_results(path, block)

    text = path.read_text()
    assert "old figures" not in text and text.count(BEGIN_MARKER) == 1
    assert "| rebuild | 61,234 events/s | 400,000 events/s (raw SELECT) | 0.150× | ≥ 50,000 events/s | met |" in text
    assert "| time_travel (exit 2) |" in text and "**did not run**" in text
    assert text.startswith("# Benchmarks\n\nintro") and text.endswith("## Notes\nkept\n")


def test_the_suite_runs_in_smoke_mode_against_its_own_postgres():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", "list_profiles", "steering_activation"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "met    activation committed → steering hook updated" not in result.stdout  # smoke runs record no figures
    assert "=== list_profiles: exit 0" in result.stdout and "=== steering_activation: exit 0" in result.stdout


def test_a_script_that_hangs_without_printing_is_stopped_at_the_deadline(tmp_path, monkeypatch, capsys):
    import bench.__main__ as runner

    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "silent.py").write_text("import time\ntime.sleep(600)\n")
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    monkeypatch.setattr(runner, "SCRIPT_TIMEOUT_S", 1)
    status, seconds = runner.run_bench(runner.Bench("silent", None), [], tmp_path / "results")
    assert status != 0 and seconds < 60
    assert "killed after 1 s" in capsys.readouterr().out
