"""Read models for CLI queries: bring the projections up to the head of the log, then query them."""

from __future__ import annotations

from ledger.cli.context import state


def read_model():  # noqa: ANN201 - the projections' ReadModel
    from projections.queries import ReadModel
    from projections.runner import catch_up

    catch_up(state.settings.database)
    return ReadModel(state.settings.database)
