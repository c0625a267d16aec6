"""``python -m projections.worker --database URL``: keep the read models up to date until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from ledger.settings import Settings
from projections.registry import PROJECTION_NAMES
from projections.runner import BATCH_SIZE, ProjectionWorker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m projections.worker", description=__doc__)
    parser.add_argument("--database", help="database URL (default: LEDGER_DATABASE_URL or ledger.sqlite)")
    parser.add_argument("--projection", action="append", choices=PROJECTION_NAMES, help="only these (repeatable)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    settings = Settings.from_env()
    database = settings.database if args.database is None else type(settings.database)(args.database)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    worker = ProjectionWorker(database, args.projection, batch_size=args.batch_size)
    print(f"projections worker ready: {', '.join(worker.names)} on {database.display()}", flush=True)
    try:
        worker.run(stop)
    finally:
        worker.close()


if __name__ == "__main__":
    main()
