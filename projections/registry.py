"""The read models this package keeps, by name."""

from __future__ import annotations

from collections.abc import Iterable

from projections import active, audit, executions, profiles, versions
from projections.errors import UnknownProjectionError
from projections.projection import ReadModelProjection

PROJECTIONS: dict[str, ReadModelProjection] = {
    projection.name: projection
    for projection in (
        profiles.PROJECTION,
        versions.PROJECTION,
        active.PROJECTION,
        executions.PROJECTION,
        audit.PROJECTION,
    )
}
PROJECTION_NAMES: tuple[str, ...] = tuple(PROJECTIONS)


def select(names: Iterable[str] | None = None) -> list[ReadModelProjection]:
    """The named projections, each once (all when ``names`` is None); an unknown name is refused."""
    if names is None:
        return list(PROJECTIONS.values())
    chosen = []
    for name in names:
        if name not in PROJECTIONS:
            raise UnknownProjectionError(f"unknown projection {name!r}; known: {', '.join(PROJECTION_NAMES)}")
        if PROJECTIONS[name] not in chosen:
            chosen.append(PROJECTIONS[name])
    return chosen
