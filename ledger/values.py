"""Rules for the values a profile is made of: each function checks one field and returns its canonical form.

Pure functions, no I/O. Every refusal is a :class:`ValidationError` naming the field (and the entry).
"""

from __future__ import annotations

import functools
import json
import math
import os
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from ledger.errors import ValidationError
from ledger.settings import number_setting

NAME_MAX = 100
DESCRIPTION_MAX = 10_000
IDENTIFIER_MAX = 200
LABEL_MAX = 64
LABELS_MAX = 100
STEERING_MAX = 100_000
STRENGTH_MAX = 200.0
STRENGTH_MAX_ENV = "LEDGER_STEERING_MAX_STRENGTH"
METADATA_DEPTH_MAX = 16
METADATA_KEYS_MAX = 1_000
METADATA_BYTES_MAX = 64 * 1024  # as compact UTF-8 JSON

# Integers: every one the domain accepts fits the column that holds it in every read model (PostgreSQL
# ``integer`` is 32-bit, ``bigint`` and SQLite's INTEGER are 64-bit), so no event can be refused by a projection.
INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
LAYER_MAX = INT32_MAX
FEATURE_INDEX_MAX = INT32_MAX

Steering = dict[int, float]


def text(value: str, field: str) -> str:
    """Any text the ledger stores: no NUL characters (PostgreSQL text and jsonb cannot hold them), and no lone
    surrogate (a JSON escape such as ``\\ud800`` can spell one; it is no character, and UTF-8 cannot hold it)."""
    if "\x00" in value:
        raise ValidationError(f"{field} must not contain NUL characters", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValidationError(f"{field} must not contain a lone surrogate (U+{ord(value[error.start]):04X} at index "
                              f"{error.start})", field=field) from None
    return value


ACTOR_MAX = 200
REASON_MAX = 1_000
TEMPERATURE_MAX = 5.0  # a generation's; past it, sampling is as good as uniform over the vocabulary
MAX_TOKENS_MAX = 4096  # the most tokens one generation may ask for


def actor_name(value: str, field: str = "actor") -> str:
    """Who runs a command, as the audit trail shows it: a name in any script (see :func:`display_name`) of at
    most ``ACTOR_MAX`` characters."""
    return display_name(value, field, maximum=ACTOR_MAX)


_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def reason_text(value: str, field: str = "reason") -> str:
    """Why a command runs, as the audit trail shows it: at most ``REASON_MAX`` characters, no NUL, and no
    bidirectional embedding, override or isolate characters, which would make it read otherwise than it is stored."""
    if len(value) > REASON_MAX:
        raise ValidationError(f"{field} must be at most {REASON_MAX} characters", field=field)
    text(value, field)
    found = next((character for character in value if character in _BIDI_CONTROLS), None)
    if found is not None:
        raise ValidationError(f"{field} must not contain bidirectional control characters "
                              f"(U+{ord(found):04X} {_character_name(found)})", field=field)
    return value


def display_name(value: Any, field: str = "name", maximum: int = NAME_MAX) -> str:
    """A name people read and tell apart (a profile's, a token's): NFKC-normalised, trimmed, 1 to ``maximum``
    characters, with no control or invisible format characters (tabs, CR/LF, zero-width spaces, bidi marks)."""
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string", field=field)
    text(value, field)
    name = visible(unicodedata.normalize("NFKC", value), field).strip()
    if not name:
        raise ValidationError(f"{field} must not be empty", field=field)
    if len(name) > maximum:
        raise ValidationError(f"{field} must be at most {maximum} characters (got {len(name)})", field=field)
    return name


def visible(value: str, field: str, key: str | None = None) -> str:
    """``value`` if it holds no control or invisible format characters (tabs, CR/LF, zero-width spaces, bidi marks),
    which would make it read otherwise than it is stored."""
    for position, character in enumerate(value):
        if unicodedata.category(character) in _INVISIBLE_CATEGORIES:
            raise ValidationError(
                f"{field} must not contain control or invisible characters "
                f"(U+{ord(character):04X} {_character_name(character)} at index {position})",
                field=key or field,
            )
    return value


def profile_name(value: Any) -> str:
    """A profile's name: see :func:`display_name`; it stands in URL paths and commands in place of the id, so it
    may not be one (a name that reads as an id would only ever be taken for one)."""
    name = path_segment(display_name(value, "name"), "name")
    try:
        UUID(name)
    except ValueError:
        return name
    raise ValidationError(f"name {name!r} reads as a profile id; choose a name that does not", field="name")


def run_id(value: Any) -> str | None:
    """An execution's run id: see :func:`identifier`; runs are looked up by it in URL paths."""
    found = identifier(value, "run_id")
    return None if found is None else path_segment(found, "run_id")


def path_segment(value: str, field: str) -> str:
    """A value that stands for itself in a URL path: no ``/``, and not ``.`` or ``..``."""
    if "/" in value or value in (".", ".."):
        raise ValidationError(f"{field} must not contain '/' or be '.' or '..' (it stands in URLs): {value!r}",
                              field=field)
    return value


def name_key(name: str) -> str:
    """How names are compared for uniqueness, so that names that look alike collide.

    NFKC (fullwidth and compatibility forms, composed accents), invisible characters dropped, inner whitespace
    collapsed, case-folded, and every non-ASCII character that Unicode lists as confusable with an ASCII one
    (UTS #39 ``confusables.txt``: Cyrillic ``а``, Greek ``ο``, ``ℓ`` …) replaced by it. ASCII characters are kept
    as they are, so the key of an ASCII name is what it always was (trimmed, collapsed, case-folded).
    """
    if name.isascii() and name.isprintable():  # the common case, with nothing to normalise or replace
        return " ".join(name.split()).casefold()
    return _unicode_name_key(name)


def _unicode_name_key(name: str) -> str:
    folded = unicodedata.normalize("NFKC", name)
    folded = "".join(character for character in folded if not _ignorable(character))
    folded = unicodedata.normalize("NFKC", " ".join(folded.split()).casefold())
    return "".join(_ascii_lookalike(character) for character in folded)


_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_VARIATION_SELECTORS = (range(0xFE00, 0xFE10), range(0xE0100, 0xE01F0), range(0x180B, 0x1810))


_CONTROL_NAMES = {"\t": "TAB", "\n": "LINE FEED", "\r": "CARRIAGE RETURN"}


def _character_name(character: str) -> str:
    return unicodedata.name(character, "") or _CONTROL_NAMES.get(character, "CONTROL CHARACTER")


def _ignorable(character: str) -> bool:
    """Characters that change nothing a reader sees: format and control characters, variation selectors,
    the combining grapheme joiner, Hangul fillers."""
    if unicodedata.category(character) in _INVISIBLE_CATEGORIES:
        return True
    code = ord(character)
    return code in (0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0) or any(code in span for span in _VARIATION_SELECTORS)


@functools.cache
def _lookalikes() -> dict[str, str]:
    """Non-ASCII character → the ASCII character(s) it is confusable with (from the Unicode data that the
    ``confusable-homoglyphs`` package ships)."""
    from confusable_homoglyphs.confusables import confusables_data

    table: dict[str, str] = {}
    for character, homoglyphs in confusables_data.items():
        if len(character) != 1 or character.isascii():
            continue
        for homoglyph in homoglyphs:
            prototype = homoglyph.get("c", "")
            if prototype and prototype.isascii() and not _ignorable(prototype[0]):
                table[character] = prototype.casefold()
                break
    return table


def _ascii_lookalike(character: str) -> str:
    if character.isascii():
        return character
    return _lookalikes().get(character, character)


def description(value: Any, field: str = "description") -> str | None:
    """Free text (a profile's description, an execution's error message)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string", field=field)
    text(value, field)
    if len(value) > DESCRIPTION_MAX:
        raise ValidationError(f"{field} must be at most {DESCRIPTION_MAX} characters (got {len(value)})", field=field)
    return value


def identifier(value: Any, field: str) -> str | None:
    """``model_id`` / ``sae_id``: an optional non-empty string, read in listings like a name, so it holds no control
    or invisible characters either."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string", field=field)
    value = text(value, field).strip()
    if not value:
        return None
    if len(value) > IDENTIFIER_MAX:
        raise ValidationError(f"{field} must be at most {IDENTIFIER_MAX} characters", field=field)
    return visible(value, field)


def integer(value: Any, field: str, low: int, high: int) -> int | None:
    """An integer from ``low`` to ``high`` (inclusive, the range of the column that stores it), or None; booleans
    and floats are refused."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{field} must be an integer", field=field)
    if value < low:
        raise ValidationError(f"{field} must be >= {low} (got {value})", field=field)
    if value > high:
        raise ValidationError(f"{field} must be <= {high} (got {value})", field=field)
    return value


def layer(value: Any) -> int | None:
    """A decoder layer: 0 to 2**31 - 1 (a 32-bit ``integer`` column)."""
    return integer(value, "layer", 0, LAYER_MAX)


def seed(value: Any) -> int | None:
    """A random seed: a signed 64-bit integer (a ``bigint`` column).

    This loses no generator state: ``torch.Generator.manual_seed`` takes -2**63 to 2**64 - 1 and maps a negative
    seed s to s + 2**64, so every one of its 2**64 seeds has a name in this range.
    """
    return integer(value, "seed", INT64_MIN, INT64_MAX)


def count(value: Any, field: str) -> int | None:
    """A count such as ``entity_count``: 0 to 2**63 - 1 (a ``bigint`` column)."""
    return integer(value, field, 0, INT64_MAX)


def duration_ms(value: Any) -> float | None:
    """A duration in milliseconds: a finite number >= 0 (a ``double precision`` column)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError("duration_ms must be a number >= 0", field="duration_ms")
    try:
        duration = float(value)
    except OverflowError:
        duration = math.inf
    if not math.isfinite(duration) or duration < 0:
        raise ValidationError(f"duration_ms must be a finite number >= 0 (got {value!r})", field="duration_ms")
    return duration


def feature_index(key: Any) -> int:
    """A steering key: an int >= 0, or a string of decimal digits (JSON object keys are strings)."""
    if isinstance(key, bool):
        raise ValueError
    if isinstance(key, int):
        index = key
    elif isinstance(key, str) and key.strip().isascii() and key.strip().isdigit():
        index = int(key.strip())
    else:
        raise ValueError
    if not 0 <= index <= FEATURE_INDEX_MAX:
        raise ValueError
    return index


@functools.lru_cache(maxsize=8)  # read on every validation: a bad value is reported once
def _strength_bound(raw: str | None) -> float:
    return number_setting({STRENGTH_MAX_ENV: raw or ""}, STRENGTH_MAX_ENV, float(STRENGTH_MAX), minimum=math.ulp(0))


def steering(value: Any) -> Steering:
    """``{feature_index: strength}``; refuses (never drops) a bad entry, naming it. Strengths are finite and within
    ±``LEDGER_STEERING_MAX_STRENGTH`` (default 200, miLLM's bound)."""
    if value is None:
        return {}
    bound = _strength_bound(os.environ.get(STRENGTH_MAX_ENV))
    if not isinstance(value, Mapping):
        raise ValidationError("steering must be an object mapping feature indices to strengths", field="steering")
    if len(value) > STEERING_MAX:
        raise ValidationError(
            f"steering has {len(value)} features; at most {STEERING_MAX} are allowed", field="steering"
        )
    result: Steering = {}
    for key, strength in value.items():
        try:
            index = feature_index(key)
        except ValueError:
            raise ValidationError(
                f"steering[{key!r}]: feature index must be a non-negative integer up to {FEATURE_INDEX_MAX}",
                field=f"steering.{key}",
            ) from None
        if isinstance(strength, bool) or not isinstance(strength, (int, float)):
            raise ValidationError(
                f"steering[{key!r}]: strength must be a number (got {strength!r})", field=f"steering.{key}"
            )
        if isinstance(strength, float) and not math.isfinite(strength):  # (an int is finite, however long)
            raise ValidationError(
                f"steering[{key!r}]: strength must be finite (got {strength!r})", field=f"steering.{key}"
            )
        if abs(strength) > bound:
            raise ValidationError(
                f"steering[{key!r}]: strength must be between {-bound:g} and {bound:g} (got {strength!r})",
                field=f"steering.{key}",
            )
        if index in result:
            raise ValidationError(f"steering[{key!r}]: feature {index} is given twice", field=f"steering.{key}")
        result[index] = float(strength)
    return dict(sorted(result.items()))


def labels(value: Any, field: str) -> list[str]:
    """``tags`` / ``products``: short strings with no control or invisible characters, trimmed, empty ones dropped,
    duplicates removed in order."""
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValidationError(f"{field} must be a list of strings", field=field)
    result: dict[str, None] = {}  # ordered, and a membership test in constant time however long the list
    seen: set[str] = set()  # as given: a repeat is checked once (millions of one tag cost no more than a few)
    for position, item in enumerate(value):
        if not isinstance(item, str):
            raise ValidationError(f"{field}[{position}] must be a string", field=f"{field}[{position}]")
        if item in seen:
            continue
        seen.add(item)
        label = visible(text(item, f"{field}[{position}]"), f"{field}[{position}]", f"{field}[{position}]").strip()
        if len(label) > LABEL_MAX:
            raise ValidationError(
                f"{field}[{position}] must be at most {LABEL_MAX} characters", field=f"{field}[{position}]"
            )
        if label:
            result[label] = None
        if len(result) > LABELS_MAX:
            raise ValidationError(f"at most {LABELS_MAX} {field} are allowed", field=field)
    return list(result)


def metadata(value: Any, *, max_bytes: int | None = METADATA_BYTES_MAX) -> dict[str, Any]:
    """A JSON object of bounded depth, entries, integers (64-bit) and size (``max_bytes`` of compact JSON)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError("metadata must be a JSON object", field="metadata")
    count = [0]

    def check(node: Any, depth: int, path: str) -> Any:
        if depth > METADATA_DEPTH_MAX:
            raise ValidationError(f"metadata is nested deeper than {METADATA_DEPTH_MAX} levels", field=path)
        if isinstance(node, Mapping):
            out = {}
            for key, item in node.items():
                if not isinstance(key, str):
                    raise ValidationError("metadata keys must be strings", field=path)
                text(key, path)
                count[0] += 1
                if count[0] > METADATA_KEYS_MAX:
                    raise ValidationError(f"metadata has more than {METADATA_KEYS_MAX} entries", field="metadata")
                out[key] = check(item, depth + 1, f"{path}.{key}")
            return out
        if isinstance(node, (list, tuple)):
            count[0] += len(node)
            if count[0] > METADATA_KEYS_MAX:
                raise ValidationError(f"metadata has more than {METADATA_KEYS_MAX} entries", field="metadata")
            return [check(item, depth + 1, f"{path}[{i}]") for i, item in enumerate(node)]
        if isinstance(node, float) and not math.isfinite(node):
            raise ValidationError("metadata numbers must be finite", field=path)
        if isinstance(node, int) and not isinstance(node, bool) and not INT64_MIN <= node <= INT64_MAX:
            raise ValidationError(f"metadata integers must be from {INT64_MIN} to {INT64_MAX}", field=path)
        if isinstance(node, str):
            return text(node, path)
        if node is None or isinstance(node, (int, float, bool)):
            return node
        raise ValidationError(f"metadata values must be JSON (got {type(node).__name__})", field=path)

    checked = check(value, 1, "metadata")
    if max_bytes is not None:
        size = len(json.dumps(checked, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise ValidationError(f"metadata is {size} bytes as JSON; at most {max_bytes} are allowed", field="metadata")
    return checked


def steering_to_json(value: Mapping[int, float]) -> dict[str, float]:
    """Steering with string keys, as JSON objects need (and as events store it)."""
    return {str(index): strength for index, strength in value.items()}


def steering_from_json(value: Mapping[str, float]) -> Steering:
    return {int(index): float(strength) for index, strength in value.items()}


class TimeOutOfRange(ValueError):
    """An ISO 8601 time whose offset takes it outside the years 1 to 9999 in UTC."""


def iso_time(text: str) -> datetime:
    """An ISO 8601 time (``Z`` or ``z`` for UTC, spaces around it ignored); one without an offset is UTC. Raises
    ``ValueError`` when ``text`` is not one."""
    stripped = text.strip()
    if stripped.endswith(("Z", "z")):
        stripped = stripped[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"{text[:80]!r} is not an ISO 8601 time such as 2025-01-31T12:00:00Z") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:  # its offset takes it before year 1 or past 9999
        raise TimeOutOfRange(f"{text[:80]!r} is not a time between the years 1 and 9999 in UTC") from None
