"""Read models for CLI queries: bring the projections up to the head of the log, then query them."""

from __future__ import annotations

from typing import Any

from ledger.cli.context import state


def read_model() -> Any:
    from projections.queries import ReadModel
    from projections.runner import ProjectionWorker

    worker = ProjectionWorker(state.settings.database)
    try:
        worker.catch_up()
    finally:
        worker.close()
    return ReadModel(state.settings.database)
