"""JSON as the ledger reads it from people and clients: a key given twice in one object is refused, wherever the
document comes from (a request body, a CLI option, an imported file). JSON leaves open which one counts, and keeping
the last would drop the other unseen."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


class RepeatedKeyError(Exception):
    """A key given twice in one object: ``key``, and ``path``, where it is, as errors name a field
    (``metadata.owner``, ``messages[1].role``)."""

    def __init__(self, key: str, path: str) -> None:
        super().__init__(f"the key {key[:80]!r} is given twice in one object (at {path[:200]}): give it once")
        self.key = key
        self.path = path


def loads(text: str | bytes) -> Any:
    """``text`` parsed as ``json.loads`` does (its errors too), refusing a key given twice in one object
    (:class:`RepeatedKeyError`)."""
    try:
        return json.loads(text, object_pairs_hook=_once)
    except _Repeated as repeated:
        raise RepeatedKeyError(repeated.args[0], _where_repeated(text)) from None


def _once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Repeated(key)
            seen.add(key)
    return found


class _Repeated(Exception):
    """A key given twice (to :func:`loads`)."""


class _Pairs(list):  # type: ignore[type-arg]
    """An object's keys and values as given, in order (repeated keys kept)."""


def _where_repeated(text: str | bytes) -> str:
    """The path of the first key given twice in ``text`` (a document read once already), in the document's order."""
    walking = [_entries(json.loads(text, object_pairs_hook=_Pairs), "")]  # (no recursion: as deep as it parsed)
    while walking:
        step = next(walking[-1], None)
        if step is None:
            walking.pop()
            continue
        path, value, repeated = step
        if repeated:
            return path
        walking.append(_entries(value, path))
    return "data"


def _entries(node: Any, at: str) -> Iterator[tuple[str, Any, bool]]:
    """A JSON value's members in order: each one's path, value, and whether its key was given before in its object."""
    if isinstance(node, _Pairs):
        seen: set[str] = set()
        for key, value in node:
            yield (f"{at}.{key}" if at else key), value, key in seen
            seen.add(key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield f"{at}[{index}]", value, False
