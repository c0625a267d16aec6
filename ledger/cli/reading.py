"""Read models for CLI queries: read only (a writing command brought them up to its writes before it ended)."""

from __future__ import annotations

from typing import Any

from ledger.cli.context import state


def read_model() -> Any:
    return state.reads
