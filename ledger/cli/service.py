"""Service commands: serve, project, rebuild."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
