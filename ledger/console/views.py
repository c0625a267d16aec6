"""What the console's templates show, derived from the read side's rows and the application's states.

Pure functions: reading form text into command fields, bars for a spec, the rows of a version diff, and the
audit timeline newest first (the read model pages it oldest first).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from ledger.api.deps import whole_number
from ledger.errors import ValidationError

MAX_EVENT_PAGE = 1000
_SEPARATORS = re.compile(r"[,\n;]+")


# -- forms -----------------------------------------------------------------------------------------------
def parse_steering(text: str) -> dict[str, float]:
    """``"12=6.0, 40=-4"`` (commas, semicolons or lines) → ``{"12": 6.0, "40": -4.0}``; a feature given twice is
    refused, never dropped."""
    steering: dict[str, float] = {}
    for item in _SEPARATORS.split(text or ""):
        item = item.strip()
        if not item:
            continue
        feature, sep, strength = item.partition("=")
        if not sep:
            feature, sep, strength = item.partition(":")
        feature, strength = feature.strip(), strength.strip()
        if not sep or not (feature.isascii() and feature.isdigit()):
            raise ValidationError(
                f"steering: write each feature as index=strength, e.g. 12=6.0 (got {item[:40]!r})", field="steering"
            )
        if str(int(feature)) in steering:
            raise ValidationError(f"steering: feature {int(feature)} is given twice", field="steering")
        try:
            if "_" in strength:  # Python's float() reads 1_000; the API (JSON) does not
                raise ValueError(strength)
            steering[str(int(feature))] = float(strength)
        except ValueError:
            raise ValidationError(
                f"steering: the strength of feature {feature} must be a number (got {strength[:40]!r})",
                field="steering",
            ) from None
    return steering


def format_steering(steering: dict[Any, float]) -> str:
    """The steering field's text: every strength exactly (it reads back as the same number)."""
    return ", ".join(f"{key}={number(value)}" for key, value in sorted(steering.items(), key=lambda kv: int(kv[0])))


def number(value: float) -> str:
    """A strength as its shortest exact text (``1.23456789``, not a rounded ``1.23457``)."""
    return repr(float(value))


_QUOTED = re.compile(r'\s*("(?:[^"\\]|\\.)*")\s*(?:[,\n;]+|$)')


def parse_labels(text: str, field: str) -> list[str]:
    """``"mood, calm"`` → ``["mood", "calm"]``; a label in double quotes (as JSON writes a string) is taken whole,
    separators and all: ``"x,y", z`` → ``["x,y", "z"]``. A quote never closed is refused (``field`` names it),
    never read as a label that starts with a quote (:func:`format_labels` quotes such a label)."""
    labels, at, text = [], 0, text or ""
    while at < len(text):
        quoted = _QUOTED.match(text, at)
        if quoted:
            try:
                labels.append(json.loads(quoted.group(1)))
                at = quoted.end()
                continue
            except ValueError:
                pass
        separator = _SEPARATORS.search(text, at)
        label = text[at:separator.start() if separator else len(text)]
        if label.strip().startswith('"'):
            raise ValidationError(f"{field}: the double quote of {label.strip()[:40]!r} is never closed (a label in "
                                  'double quotes is taken whole; a quote inside one is written \\")', field=field)
        labels.append(label)
        at = separator.end() if separator else len(text)
    return [label.strip() for label in labels if label.strip()]


def format_labels(labels: list[str]) -> str:
    """The tags or products field's text, which :func:`parse_labels` reads back exactly: a label holding a
    separator or starting with a double quote is written in double quotes."""
    return ", ".join(json.dumps(label, ensure_ascii=False) if _SEPARATORS.search(label) or label.startswith('"')
                     else label for label in labels)


def optional_text(text: str | None) -> str | None:
    return (text or "").strip() or None


def form_text(text: str | None) -> str:
    """Text as it was typed: browsers send a textarea's line breaks as CRLF, whatever the page showed (a lone CR
    too), so each of them is a ``\\n``."""
    return (text or "").replace("\r\n", "\n").replace("\r", "\n")


def typed_description(text: str | None) -> str | None:
    """A description as the API stores the same typed text: ``\\n`` line breaks, spaces kept (the API trims
    nothing); a field left blank means no description, as it always has in the console."""
    typed = form_text(text)
    return typed if typed.strip() else None


_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def decimal_text(text: str, field: str) -> str:
    """``text``, trimmed, when it writes a number as a form's field may (``0.7``, ``1e-2``), for the API's request
    to take with its bounds; else refused, saying so (not in the words of a type check)."""
    text = text.strip()
    if not _DECIMAL.fullmatch(text):
        raise ValidationError(f"{field} must be a number (got {text[:40]!r})", field=field)
    return text


def optional_int(text: str | None, field: str, minimum: int | None = None) -> int | None:
    text = (text or "").strip()
    if not text:
        return None
    found = whole_number(text)
    if found is None:
        raise ValidationError(f"{field} must be a whole number of at most 64 bits (got {text[:40]!r})", field=field)
    if minimum is not None and found < minimum:
        raise ValidationError(f"{field} must be at least {minimum} (got {found})", field=field)
    return found


# -- a spec as bars --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bar:
    feature: str
    strength: float
    percent: float  # of the strongest feature's magnitude
    negative: bool


def bars(steering: dict[Any, float], limit: int = 64) -> list[Bar]:
    """The features by magnitude, strongest first, each as a share of the strongest."""
    ordered = sorted(steering.items(), key=lambda kv: (-abs(kv[1]), int(kv[0])))[:limit]
    peak = max((abs(value) for _, value in ordered), default=0.0) or 1.0
    return [Bar(str(key), value, round(abs(value) / peak * 100, 1), value < 0) for key, value in ordered]


# -- a diff as rows --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiffRow:
    kind: str  # "added", "removed" or "changed"
    what: str
    before: str
    after: str


def diff_rows(diff: Any) -> list[DiffRow]:
    """The rows of an ``api.schemas.ProfileDiff``: fields first, then features by index."""
    rows = [
        DiffRow("changed", change.field, _shown(change.before), _shown(change.after)) for change in diff.changes
    ]
    steering = diff.steering
    features = sorted({*steering.added, *steering.removed, *steering.changed}, key=int)
    for feature in features:
        if feature in steering.added:
            rows.append(DiffRow("added", f"feature {feature}", "", number(steering.added[feature])))
        elif feature in steering.removed:
            rows.append(DiffRow("removed", f"feature {feature}", number(steering.removed[feature]), ""))
        else:
            change = steering.changed[feature]
            rows.append(DiffRow("changed", f"feature {feature}", number(change.before), number(change.after)))
    return rows


def _shown(value: Any) -> str:
    """A field's value in a diff, exactly: a list or a mapping as JSON (``["a, b"]`` is not ``["a", "b"]``)."""
    if value is None or value == [] or value == {}:
        return "—"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# -- the audit timeline, newest first -------------------------------------------------------------------
def newest_events(
    reads: Any, *, limit: int, before: int | None = None, **filters: Any
) -> tuple[list[Any], int | None]:
    """The ``limit`` newest audit rows before position ``before`` (default: the head), newest first, and the
    position to page on from (None when there is nothing older).

    The read model pages oldest first, so this reads windows that end at the head and widen fourfold until one
    holds ``limit`` rows or reaches the start of the log; without filters the first window is exact.
    """
    head = (before - 1) if before is not None else reads.log_position()
    if head <= 0:
        return [], None
    span = limit
    while True:
        low = max(0, head - span)
        rows = every_item(partial(reads.events, after_position=low, up_to_position=head, limit=MAX_EVENT_PAGE, **filters))
        if len(rows) >= limit or low == 0:
            newest = rows[-limit:][::-1]
            more = len(rows) > limit or low > 0
            return newest, (newest[-1].position if newest and more else None)
        span *= 4


def every_item(read_page: Callable[..., Any]) -> list[Any]:
    """The items of every page of a read-model query: ``read_page(cursor=...)``, from the first page to the last."""
    page = read_page(cursor=None)
    items = list(page.items)
    while page.next_cursor is not None:
        page = read_page(cursor=page.next_cursor)
        items += page.items
    return items
