"""Benchmark: activation (or a revision of the active profile) committed → steering hook updated.

    python bench/steering_activation.py                       # tiny model, SQLite, 100 activations
    python bench/steering_activation.py --database postgresql://…  --count 100
    python bench/steering_activation.py --smoke               # a few activations, no target

The clock starts when the command returns (its events are committed) and stops when the engine's active
snapshot is the new profile version. Prints p50/p99/max and exits 1 when p99 ≥ 100 ms.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Figure, percentile, report, summary_ms  # noqa: E402
from bench.steering_generation import random_sae  # noqa: E402
from ledger.application import ProfileLedger  # noqa: E402
from ledger.settings import Database  # noqa: E402
from projections.follow import LogFollower  # noqa: E402
from steering.engine import SteeringEngine  # noqa: E402
from steering.models import load_model  # noqa: E402
from steering.projector import SteeringProjector  # noqa: E402
from steering.runs import GenerationService  # noqa: E402
from steering.tiny import build_tiny_model  # noqa: E402

TARGET_P99_MS = 100.0


def tiny_engine(directory: Path) -> SteeringEngine:
    loaded = load_model(build_tiny_model(directory / "model", layers=2, hidden=64), device="cpu")
    return SteeringEngine(loaded, random_sae(64, 1, 512))


def wait_until(condition, timeout: float = 5.0) -> float:
    """Seconds until ``condition()`` held (spinning: this measures latency, not throughput)."""
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout:
            raise TimeoutError("the hook did not follow")
        time.sleep(0.0002)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="Event store URL (default: a temporary SQLite file).")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    count = 5 if args.smoke else args.count
    with tempfile.TemporaryDirectory() as scratch:
        database = Database(args.database or f"sqlite:///{Path(scratch) / 'ledger.sqlite'}")
        ledger = ProfileLedger(env=database.eventsourcing_env())
        engine = tiny_engine(Path(scratch))
        service = GenerationService(ledger, engine)
        projector = SteeringProjector(engine, service.spec_at)
        follower = LogFollower(database, projector)
        projector.bootstrap(follower.head(), None, None)
        ledger.add_listener(follower.wake)
        stop = threading.Event()
        thread = threading.Thread(target=follower.run, args=(stop,), daemon=True)
        thread.start()
        try:
            suffix = time.time_ns()
            ids = [ledger.create_profile({"name": f"bench-{suffix}-{i}", "steering": {i % 512: 1.0}, "layer": 1}).profile.id
                   for i in range(count)]
            activation, revision = [], []
            for i, pid in enumerate(ids):
                ledger.activate_profile(pid)
                activation.append(wait_until(lambda: engine.active is not None and engine.active.profile_id == str(pid)))
                ledger.update_profile(pid, {"steering": {(i + 1) % 512: 2.0}})
                revision.append(wait_until(lambda: engine.active.version == 2))
        finally:
            stop.set()
            follower.wake()
            thread.join(5)
            follower.close()
            engine.close()
            ledger.close()
    store = database.display().split("://")[0]
    figures = []
    for name, delays in (
        ("activation committed → steering hook updated", activation),
        ("revision of the active profile → steering hook updated", revision),
    ):
        ms = [d * 1000 for d in delays]
        p99 = percentile(ms, 0.99)
        figures.append(Figure(
            name=name, value=p99, unit="ms", target=f"p99 < {TARGET_P99_MS:.0f} ms", met=p99 < TARGET_P99_MS,
            detail=f"p99 over {summary_ms(ms)}; {store} event store, tiny model", device=str(engine.loaded.device),
        ))
    return report(figures, smoke=args.smoke)


if __name__ == "__main__":
    sys.exit(main())
