"""How every benchmark reports: one :class:`Figure` per row of BENCHMARKS.md, printed and (for the suite runner)
appended as a JSON line to the file named by ``$BENCH_RESULTS``.

A script ends with ``sys.exit(report(figures, smoke=args.smoke))``: exit status 1 when a target was missed
(0 in a smoke run, which checks only that the script still runs).
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Figure:
    """One measured figure, its same-run baseline where the target is a ratio, and the verdict."""

    name: str  # the row, as BENCHMARKS.md names it
    value: float
    unit: str  # "req/s", "ms", "events/s", "×" …
    target: str  # as the row states it, e.g. "≥ 0.5×" or "p99 < 50 ms"
    met: bool
    baseline: float | None = None
    baseline_label: str | None = None  # what the baseline is, e.g. "pgbench, 1 INSERT per transaction"
    ratio: float | None = None
    detail: str = ""  # p50/p99, sizes, settings: whatever a reader needs to trust the figure
    device: str = "cpu"

    def line(self) -> str:
        figure = f"{self.value:,.2f} {self.unit}"
        if self.baseline is not None:
            figure += f" vs {self.baseline:,.2f} {self.unit} ({self.baseline_label})"
        if self.ratio is not None:
            figure += f", ratio {self.ratio:.3f}"
        verdict = "met" if self.met else "MISSED"
        extra = f" [{self.detail}]" if self.detail else ""
        return f"{self.name}: {figure} → target {self.target}: {verdict}{extra}"


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))]


def summary_ms(samples_ms: list[float]) -> str:
    return (
        f"n={len(samples_ms)}, p50 {statistics.median(samples_ms):.2f} ms, p99 {percentile(samples_ms, 0.99):.2f} ms,"
        f" max {max(samples_ms):.2f} ms"
    )


def report(figures: list[Figure], *, smoke: bool = False) -> int:
    """Print each figure, hand it to the suite runner, and return the exit status."""
    results = os.environ.get("BENCH_RESULTS")
    for figure in figures:
        print(figure.line(), flush=True)
        if results and not smoke:
            with open(results, "a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(figure)) + "\n")
    return 0 if smoke or all(figure.met for figure in figures) else 1
